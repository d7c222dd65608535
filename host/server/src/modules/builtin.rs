//! Deploys the built-in modules on a new cluster, through the log like any deploy. Every fresh
//! founding member tries; deploying the bytes a name already has is a no-op, so the races end
//! in one version per module.

use std::sync::Arc;
use std::time::Duration;

use crate::server::Server;
use baton_limits::{BUILTIN_DEPLOY_ATTEMPTS, BUILTIN_DEPLOY_RETRY_MS};
use baton_proto::batonpb::{ModuleDeploy, log_command, log_reply};
use baton_wasm::builtin::BUILTIN_MODULES;

pub(crate) async fn deploy_builtins(server: Arc<Server>) {
    for (name, component) in BUILTIN_MODULES {
        for attempt in 1..=BUILTIN_DEPLOY_ATTEMPTS {
            let op = log_command::Op::ModuleDeploy(ModuleDeploy {
                name: name.to_string(),
                component: component.to_vec(),
            });
            match server.propose(op).await.map(|reply| reply.result) {
                Ok(Some(log_reply::Result::ModuleDeployed(d))) => {
                    tracing::info!(
                        module = name,
                        version = d.version,
                        "built-in module deployed"
                    );
                    break;
                }
                Ok(other) => {
                    tracing::error!(module = name, reply = ?other, "built-in module refused");
                    break;
                }
                Err(status) if attempt < BUILTIN_DEPLOY_ATTEMPTS => {
                    tracing::debug!(module = name, attempt, %status, "deploying a built-in module");
                    tokio::time::sleep(Duration::from_millis(BUILTIN_DEPLOY_RETRY_MS)).await;
                }
                Err(status) => {
                    tracing::error!(
                        module = name, attempts = attempt, %status,
                        "gave up deploying a built-in module; deploy it with `baton module deploy`"
                    );
                }
            }
        }
    }
}
