//! Baton's `baton.v1.Modules` service: deploy, list, describe, delete and invoke modules.
//! Writes go through the log (forwarded to the leader like any write); a deploy is validated
//! here first so a bad module costs no log entry, and again by every member at apply. Describe
//! reads each version's declared functions from its stored bytes (nothing replicated records
//! them).

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::modules::calls::Calls;
use crate::server::Server;
use baton_apply::sm::builtin::builtin_set_of;
use baton_apply::sm::module::{check_name, describe, list, with_code};
use baton_limits::{GUEST_FUEL_DEFAULT, GUEST_FUEL_MAX, GUEST_INPUT_BYTES_MAX};
use baton_proto::baton::v1 as pb;
use baton_proto::baton::v1::modules_server::Modules;
use baton_proto::batonpb::{self, log_command};
use baton_wasm::{DeclaredFunction, Runtime, declared_functions, hash_hex, hex_bytes};

#[derive(Clone)]
pub(crate) struct ModulesService {
    server: Arc<Server>,
    runtime: Runtime,
    calls: Calls,
}

impl ModulesService {
    pub(crate) fn new(server: Arc<Server>, runtime: Runtime, calls: Calls) -> Self {
        Self {
            server,
            runtime,
            calls,
        }
    }

    /// How this service runs calls, for the services that adapt etcd's recipes to modules.
    pub(crate) fn calls(&self) -> &Calls {
        &self.calls
    }

    /// A linearizable read view of the module tables.
    async fn read_view(&self) -> Result<baton_store::mvcc::ReadView, Status> {
        self.server.linearize().await?;
        self.server.read_view().await
    }
}

fn parse_hex(text: &str) -> Result<Vec<u8>, Status> {
    let bytes = (text.len() == 64).then(|| hex_bytes(text)).flatten();
    bytes.ok_or_else(|| Status::invalid_argument(format!("hash must be 64 hex digits: {text:?}")))
}

fn info(name: String, record: batonpb::ModuleRecord) -> pb::ModuleInfo {
    // Counted as apply counts them, versions from before origins were recorded included.
    let sets: Vec<Option<u32>> = (record.versions.iter())
        .map(|v| builtin_set_of(&record, v))
        .collect();
    let versions = (record.versions.into_iter().zip(sets))
        .map(|(v, set)| pb::ModuleVersion {
            version: v.version,
            hash: hash_hex(&v.hash),
            size_bytes: v.size_bytes,
            exports: v.exports,
            builtin: set.is_some(),
            builtin_set: set.unwrap_or(0),
            // Describe fills these from the stored bytes; List skips that read.
            functions: Vec::new(),
            declares_functions: false,
        })
        .collect();
    pb::ModuleInfo { name, versions }
}

/// The functions the stored module version `hash` declares, None when it declares none. A
/// declaration deploy would refuse (only possible in bytes stored by a release that did not
/// check it) describes as none, with a warning, rather than failing the whole Describe.
fn declared_of(
    view: &baton_store::mvcc::ReadView,
    hash: &[u8],
) -> Result<Option<Vec<DeclaredFunction>>, Status> {
    let hex = hash_hex(hash);
    match with_code(view, hash, declared_functions).map_err(storage)? {
        Some(Ok(functions)) => Ok(functions),
        Some(Err(why)) => {
            tracing::warn!(
                hash = hex,
                why,
                "ignoring a stored module's declared functions"
            );
            Ok(None)
        }
        None => Err(Status::internal(format!("module code {hex} is not stored"))),
    }
}

fn function(f: DeclaredFunction) -> pb::ModuleFunction {
    pb::ModuleFunction {
        name: f.name,
        writes: f.writes,
        waits: f.waits,
        summary: f.summary,
        input: f.input,
        input_example: f.input_example,
        output_example: f.output_example,
    }
}

fn storage(e: impl std::fmt::Display) -> Status {
    Status::internal(e.to_string())
}

#[tonic::async_trait]
impl Modules for ModulesService {
    async fn deploy(
        &self,
        request: Request<pb::DeployRequest>,
    ) -> Result<Response<pb::DeployResponse>, Status> {
        let req = request.into_inner();
        check_name(&req.name).map_err(Status::invalid_argument)?;
        // Compiling a large component takes a while: off the async workers.
        let runtime = self.runtime.clone();
        let (component, validated) = tokio::task::spawn_blocking(move || {
            let validated = runtime.validate(&req.component);
            (req.component, validated)
        })
        .await
        .map_err(|e| Status::internal(format!("module validation panicked: {e}")))?;
        validated.map_err(|e| Status::invalid_argument(e.to_string()))?;
        let op = log_command::Op::ModuleDeploy(batonpb::ModuleDeploy {
            name: req.name,
            component,
            // Only a leader's own deployer proposes built-ins (modules::builtin).
            builtin_set: 0,
        });
        let d: batonpb::ModuleDeployed = self.server.write(op).await?;
        Ok(Response::new(pb::DeployResponse {
            hash: hash_hex(&d.hash),
            version: d.version,
        }))
    }

    async fn list(
        &self,
        _request: Request<pb::ListRequest>,
    ) -> Result<Response<pb::ListResponse>, Status> {
        let view = self.read_view().await?;
        let modules = list(&view).map_err(storage)?;
        Ok(Response::new(pb::ListResponse {
            modules: modules.into_iter().map(|(n, r)| info(n, r)).collect(),
        }))
    }

    async fn describe(
        &self,
        request: Request<pb::DescribeRequest>,
    ) -> Result<Response<pb::ModuleInfo>, Status> {
        let name = request.into_inner().name;
        let view = self.read_view().await?;
        let Some(record) = describe(&view, &name).map_err(storage)? else {
            return Err(Status::not_found(format!("module not found: {name}")));
        };
        let declared = (record.versions.iter())
            .map(|v| declared_of(&view, &v.hash))
            .collect::<Result<Vec<_>, _>>()?;
        let mut info = info(name, record);
        for (v, functions) in info.versions.iter_mut().zip(declared) {
            if let Some(functions) = functions {
                v.declares_functions = true;
                v.functions = functions.into_iter().map(function).collect();
            }
        }
        Ok(Response::new(info))
    }

    async fn delete(
        &self,
        request: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        let name = request.into_inner().name;
        let op = log_command::Op::ModuleDelete(batonpb::ModuleDelete { name });
        let d: batonpb::ModuleDeleted = self.server.write(op).await?;
        Ok(Response::new(pb::DeleteResponse {
            versions: d.versions,
        }))
    }

    async fn invoke(
        &self,
        request: Request<pb::InvokeRequest>,
    ) -> Result<Response<pb::InvokeResponse>, Status> {
        let req = request.into_inner();
        let hash = if req.hash.is_empty() {
            check_name(&req.name).map_err(Status::invalid_argument)?;
            Vec::new()
        } else {
            parse_hex(&req.hash)?
        };
        if req.input.len() > GUEST_INPUT_BYTES_MAX {
            return Err(Status::invalid_argument(format!(
                "input of {} bytes exceeds the limit of {GUEST_INPUT_BYTES_MAX}",
                req.input.len()
            )));
        }
        let fuel = match req.fuel {
            0 => GUEST_FUEL_DEFAULT,
            f if f > GUEST_FUEL_MAX => {
                return Err(Status::invalid_argument(format!(
                    "fuel {f} exceeds the limit of {GUEST_FUEL_MAX}"
                )));
            }
            f => f,
        };
        let call = batonpb::ModuleInvoke {
            name: req.name,
            hash,
            function: req.function,
            input: req.input,
            lease: req.lease,
            fuel,
        };
        let response = if req.read_only {
            self.calls.run_read_only(call).await
        } else {
            self.calls.run(call).await
        };
        response.map(Response::new)
    }
}
