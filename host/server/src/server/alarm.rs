//! The space quota (etcd's `--quota-backend-bytes`): each member watches its own state
//! database file and, once it reaches the quota, raises NOSPACE for itself through Raft. From
//! then on every member refuses writes that store values (see [`baton_apply::sm::alarm`]) until an
//! operator frees space and disarms the alarm.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use crate::server::Server;
use baton_limits::QUOTA_CHECK_INTERVAL_MS;
use baton_proto::batonpb::log_command;
use baton_proto::etcdserverpb::alarm_request::AlarmAction;
use baton_proto::etcdserverpb::{AlarmRequest, AlarmType};
use baton_store::ops::alarm::list_alarms;

/// Size of the state database file in bytes (0 if it cannot be read).
pub(crate) fn db_size_bytes(path: &std::path::Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

/// Checks the database size every `QUOTA_CHECK_INTERVAL_MS` until aborted.
pub(crate) fn spawn_quota_watch(
    server: Arc<Server>,
    db_path: PathBuf,
    quota_bytes: u64,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(QUOTA_CHECK_INTERVAL_MS));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let size = db_size_bytes(&db_path);
            // etcd: space is available while size + cost < quota, so reaching it is too much.
            if size < quota_bytes {
                continue;
            }
            match raised_for_me(&server) {
                Ok(true) => continue,
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read alarms");
                    continue;
                }
            }
            tracing::warn!(
                size,
                quota_bytes,
                "state database reached its quota; raising NOSPACE"
            );
            let raise = AlarmRequest {
                action: AlarmAction::Activate as i32,
                member_id: server.member_id(),
                alarm: AlarmType::Nospace as i32,
            };
            if let Err(e) = server.propose(log_command::Op::Alarm(raise)).await {
                tracing::warn!(error = %e, "could not raise NOSPACE; will retry");
            }
        }
    })
}

fn raised_for_me(server: &Server) -> anyhow::Result<bool> {
    let view = server.read_committed()?;
    let alarms = list_alarms(&view, AlarmType::Nospace)?;
    Ok(alarms.iter().any(|a| a.member_id == server.member_id()))
}
