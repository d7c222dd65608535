//! gRPC server reflection on the client port, asked as grpcurl asks it (grpcurl is not packaged
//! in Debian 12): `list` names every served service, and `describe` can resolve each one's file
//! and, file by file, everything it imports. Baton only: etcd 3.4 serves no reflection.

use std::collections::{BTreeSet, VecDeque};

use anyhow::{Context, Result, bail, ensure};
use baton_e2e::{Backend, Cluster, run_test};
use prost::Message;
use prost_types::FileDescriptorProto;
use tonic::transport::Channel;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
use tonic_reflection::pb::v1::{ServerReflectionRequest, ServerReflectionResponse};
use tonic_reflection::pb::v1alpha;

/// Every service a member serves on its client port (no Auth: Baton has none).
const SERVED: [&str; 11] = [
    "baton.v1.Modules",
    "etcdserverpb.Cluster",
    "etcdserverpb.KV",
    "etcdserverpb.Lease",
    "etcdserverpb.Maintenance",
    "etcdserverpb.Watch",
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
    "v3electionpb.Election",
    "v3lockpb.Lock",
];

async fn channel(cluster: &Cluster) -> Result<Channel> {
    Ok(Channel::from_shared(cluster.endpoint(0))?.connect().await?)
}

/// One request on the v1 stream, as grpcurl sends them one by one.
async fn ask(
    client: &mut ServerReflectionClient<Channel>,
    request: MessageRequest,
) -> Result<MessageResponse> {
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(request),
    };
    let mut answers = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await?
        .into_inner();
    let answer: ServerReflectionResponse =
        answers.message().await?.context("no reflection answer")?;
    answer
        .message_response
        .context("an empty reflection answer")
}

async fn files(
    client: &mut ServerReflectionClient<Channel>,
    request: MessageRequest,
) -> Result<Vec<FileDescriptorProto>> {
    match ask(client, request.clone()).await? {
        MessageResponse::FileDescriptorResponse(found) => found
            .file_descriptor_proto
            .iter()
            .map(|bytes| Ok(FileDescriptorProto::decode(bytes.as_slice())?))
            .collect(),
        other => bail!("{request:?} answered {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_lists_and_describes_every_served_service() {
    run_test(Backend::Baton, async {
        let cluster = Cluster::start(Backend::Baton, 1).await?;
        let mut client = ServerReflectionClient::new(channel(&cluster).await?);

        let listed = match ask(&mut client, MessageRequest::ListServices(String::new())).await? {
            MessageResponse::ListServicesResponse(list) => list
                .service
                .into_iter()
                .map(|s| s.name)
                .collect::<BTreeSet<_>>(),
            other => bail!("list services answered {other:?}"),
        };
        assert_eq!(listed, SERVED.map(String::from).into(), "listed services");

        for service in SERVED {
            let found = files(
                &mut client,
                MessageRequest::FileContainingSymbol(service.to_string()),
            )
            .await?;
            let file = found.first().context("no file")?;
            let declared = file
                .service
                .iter()
                .any(|s| format!("{}.{}", file.package(), s.name()) == service);
            ensure!(declared, "{service} resolved to {:?}", file.name());
            // `describe` then fetches every import, file by file.
            let mut pending: VecDeque<String> = file.dependency.iter().cloned().collect();
            let mut resolved = BTreeSet::new();
            while let Some(name) = pending.pop_front() {
                if !resolved.insert(name.clone()) {
                    continue;
                }
                let imported =
                    files(&mut client, MessageRequest::FileByFilename(name.clone())).await?;
                let imported = imported.first().context("no file")?;
                assert_eq!(imported.name(), name);
                pending.extend(imported.dependency.iter().cloned());
            }
        }
        // A method resolves to its service's file too, and an unknown symbol ends the stream
        // with NOT_FOUND.
        let method = files(
            &mut client,
            MessageRequest::FileContainingSymbol("etcdserverpb.KV.Range".to_string()),
        )
        .await?;
        assert!(method.iter().any(|f| f.package() == "etcdserverpb"));
        let unknown = ask(
            &mut client,
            MessageRequest::FileContainingSymbol("no.Such".into()),
        )
        .await
        .err()
        .context("an unknown symbol was found")?;
        let status = unknown
            .downcast_ref::<tonic::Status>()
            .context("not a gRPC status")?;
        assert_eq!(status.code(), tonic::Code::NotFound, "{status}");

        // Older grpcurl releases ask v1alpha first.
        let mut alpha = v1alpha::server_reflection_client::ServerReflectionClient::new(
            channel(&cluster).await?,
        );
        let request = v1alpha::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(
                v1alpha::server_reflection_request::MessageRequest::ListServices(String::new()),
            ),
        };
        let answer = alpha
            .server_reflection_info(tokio_stream::iter([request]))
            .await?
            .into_inner()
            .message()
            .await?
            .and_then(|a| a.message_response);
        let Some(v1alpha::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
            answer
        else {
            bail!("v1alpha list services answered {answer:?}");
        };
        let listed: BTreeSet<String> = list.service.into_iter().map(|s| s.name).collect();
        assert_eq!(listed, SERVED.map(String::from).into(), "v1alpha");
        Ok(())
    })
    .await;
}
