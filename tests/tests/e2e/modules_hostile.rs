//! Hostile modules over gRPC: unbounded allocation, unbounded recursion and writes past the
//! size bounds fail with clear statuses, components importing WASI or an unknown interface and
//! an oversized module are refused at Deploy with INVALID_ARGUMENT naming the problem — and
//! after each, the member still serves a put, a get and a well-behaved call.

use anyhow::{Context, Result, ensure};
use baton_e2e::{Backend, Cluster, run_test};
use baton_limits::{GUEST_FUEL_MAX, GUEST_MEMORY_BYTES_MAX, MODULE_BYTES_MAX};
use baton_proto::baton::v1::modules_client::ModulesClient;
use baton_proto::baton::v1::{DeployRequest, InvokeRequest};
use baton_wasm::builtin::HOSTILE_MODULE;
use etcd_client::Client;
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::modules::{invoke, modules_client, wait_deployed};

/// Fuel enough for hoard and recurse to reach the memory and stack caps first.
const CAP_FUEL: u64 = 100_000_000;
/// Far above any limit on a module, and below the transport's message cap, so the refusal
/// comes from Baton's own check with its own message.
const HUGE_MODULE_BYTES: usize = 50 * 1024 * 1024;

/// A put, a linearizable get and a counter call all succeed.
async fn still_serves(
    kv: &mut Client,
    modules: &mut ModulesClient<Channel>,
    step: &str,
) -> Result<()> {
    kv.put("alive", step, None)
        .await
        .with_context(|| format!("put after {step}"))?;
    let got = kv
        .get("alive", None)
        .await
        .with_context(|| format!("get after {step}"))?;
    ensure!(got.kvs().first().map(|kv| kv.value()) == Some(step.as_bytes()));
    let add = invoke("counter", "add", r#"{"keys":["alive/calls"],"by":1}"#, 0);
    modules
        .invoke(add)
        .await
        .with_context(|| format!("counter call after {step}"))?;
    Ok(())
}

fn expect_status(
    result: Result<tonic::Response<impl std::fmt::Debug>, Status>,
    code: Code,
    text: &str,
) -> Result<()> {
    let status = match result {
        Ok(reply) => anyhow::bail!("expected {code:?}, got {reply:?}"),
        Err(status) => status,
    };
    ensure!(status.code() == code, "expected {code:?}, got {status:?}");
    ensure!(
        status.message().contains(text),
        "{:?} does not mention {text:?}",
        status.message()
    );
    Ok(())
}

fn deploy(name: &str, component: Vec<u8>) -> DeployRequest {
    DeployRequest {
        name: name.to_string(),
        component,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_calls_fail_cleanly_and_the_member_keeps_serving() {
    run_test(Backend::Baton, async {
        let cluster = Cluster::start(Backend::Baton, 1).await?;
        let mut modules = modules_client(cluster.endpoint(0)).await?;
        let mut kv = cluster.client().await?;
        wait_deployed(&mut modules, "counter").await?;
        modules
            .deploy(deploy("hostile", HOSTILE_MODULE.to_vec()))
            .await
            .context("deploy")?;

        let hoard = modules
            .invoke(invoke("hostile", "hoard", "x", CAP_FUEL))
            .await;
        let cap = format!("guest hit its memory cap of {GUEST_MEMORY_BYTES_MAX} bytes");
        expect_status(hoard, Code::ResourceExhausted, &cap)?;
        still_serves(&mut kv, &mut modules, "hoard").await?;

        let recurse = modules
            .invoke(invoke("hostile", "recurse", "x", CAP_FUEL))
            .await;
        expect_status(
            recurse,
            Code::FailedPrecondition,
            "guest trapped: stack overflow",
        )?;
        still_serves(&mut kv, &mut modules, "recurse").await?;

        // 200 puts of 1 MiB: fuel alone would have let the run write 200 MB on every member
        // in one apply (RISKS R05).
        let mut input = 200u64.to_le_bytes().to_vec();
        input.extend_from_slice(&(1u64 << 20).to_le_bytes());
        let flood = InvokeRequest {
            input,
            ..invoke("hostile", "flood", "", GUEST_FUEL_MAX)
        };
        let flooded = modules.invoke(flood).await;
        expect_status(
            flooded,
            Code::ResourceExhausted,
            "bytes of keys and values in one run",
        )?;
        still_serves(&mut kv, &mut modules, "flood").await?;
        let written = kv.get("hostile/flood/0", None).await?;
        ensure!(
            written.kvs().is_empty(),
            "the refused flood committed a put"
        );

        // No failed call left its first write behind.
        let touched = kv.get("hostile/touched", None).await?;
        ensure!(touched.kvs().is_empty(), "{:?}", touched.kvs());
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_refuses_foreign_imports_and_huge_modules() {
    run_test(Backend::Baton, async {
        let cluster = Cluster::start(Backend::Baton, 1).await?;
        let mut modules = modules_client(cluster.endpoint(0))
            .await?
            .max_encoding_message_size(usize::MAX);
        let mut kv = cluster.client().await?;
        wait_deployed(&mut modules, "counter").await?;

        for import in ["wasi:filesystem/types@0.2.0", "evil:net/socket@1.0.0"] {
            let text = format!(r#"(component (import "{import}" (instance)))"#);
            let component = wat::parse_str(&text)?;
            let refused = modules.deploy(deploy("foreign", component)).await;
            expect_status(
                refused,
                Code::InvalidArgument,
                &format!("module imports {import}"),
            )?;
            still_serves(&mut kv, &mut modules, import).await?;
        }

        let huge = vec![0u8; HUGE_MODULE_BYTES];
        let refused = modules.deploy(deploy("huge", huge)).await;
        let message =
            format!("module of {HUGE_MODULE_BYTES} bytes exceeds the limit of {MODULE_BYTES_MAX}");
        expect_status(refused, Code::InvalidArgument, &message)?;
        still_serves(&mut kv, &mut modules, "huge").await?;

        // None of the refused modules exists.
        let listed = modules
            .list(baton_proto::baton::v1::ListRequest {})
            .await?
            .into_inner();
        let names: Vec<&str> = listed.modules.iter().map(|m| m.name.as_str()).collect();
        ensure!(
            !names.iter().any(|n| ["foreign", "huge"].contains(n)),
            "{names:?}"
        );
        Ok(())
    })
    .await;
}
