//! etcd's `Maintenance` service: Status, Alarm, Hash, HashKV, Snapshot, Defragment and
//! MoveLeader. Downgrade answers UNIMPLEMENTED (Baton has one storage version).

use openraft::type_config::async_runtime::WatchReceiver;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use tonic::{Request, Response, Status};

use crate::api::status::kv_status;
use crate::maintenance::snapshot_stream::snapshot_stream;
use crate::server::alarm::db_size_bytes;
use crate::server::{NO_LEADER, Server};
use baton_limits::MOVE_LEADER_TIMEOUT_MS;
use baton_proto::batonpb::log_command;
use baton_proto::etcdserverpb::alarm_request::AlarmAction;
use baton_proto::etcdserverpb::maintenance_server::Maintenance;
use baton_proto::etcdserverpb::{
    AlarmRequest, AlarmResponse, AlarmType, DefragmentRequest, DefragmentResponse,
    DowngradeRequest, DowngradeResponse, HashKvRequest, HashKvResponse, HashRequest, HashResponse,
    MoveLeaderRequest, MoveLeaderResponse, SnapshotRequest, SnapshotResponse, StatusRequest,
    StatusResponse,
};
use baton_store::hash::{hash_all, hash_kv};
use baton_store::ops::alarm::{alarm_text, list_alarms};

/// The etcd API version Baton speaks; clients use it to decide which features to use.
const ETCD_API_VERSION: &str = "3.5.0";
/// etcd's `ErrGRPCNotLeader` (FAILED_PRECONDITION): MoveLeader must be sent to the leader.
const NOT_LEADER: &str = "etcdserver: not leader";
/// etcd's `ErrGRPCBadLeaderTransferee` (FAILED_PRECONDITION): not a voting member.
const BAD_TRANSFEREE: &str = "etcdserver: bad leader transferee";
/// etcd's `ErrTimeoutLeaderTransfer` (no gRPC mapping upstream, so UNKNOWN).
const TRANSFER_TIMED_OUT: &str = "etcdserver: request timed out, leader transfer took too long";

pub(crate) struct MaintenanceService {
    server: Arc<Server>,
    db_path: PathBuf,
    /// The space quota in bytes; 0 when disabled.
    quota_bytes: u64,
}

impl MaintenanceService {
    pub(crate) fn new(server: Arc<Server>, db_path: PathBuf, quota_bytes: u64) -> Self {
        Self {
            server,
            db_path,
            quota_bytes,
        }
    }

    fn revision(&self) -> Result<i64, Status> {
        let view = self.server.read_committed()?;
        baton_store::mvcc::current_revision(&view).map_err(kv_status)
    }

    fn alarms(
        &self,
        alarm: AlarmType,
    ) -> Result<Vec<baton_proto::etcdserverpb::AlarmMember>, Status> {
        let view = self.server.read_committed()?;
        list_alarms(&view, alarm).map_err(|e| Status::internal(e.to_string()))
    }
}

fn db_size(path: &std::path::Path) -> i64 {
    i64::try_from(db_size_bytes(path)).unwrap_or(i64::MAX)
}

#[tonic::async_trait]
impl Maintenance for MaintenanceService {
    /// GET reads the replicated alarm list after a read barrier; ACTIVATE and DEACTIVATE go
    /// through the log, as etcd's do.
    async fn alarm(
        &self,
        request: Request<AlarmRequest>,
    ) -> Result<Response<AlarmResponse>, Status> {
        let req = request.into_inner();
        if req.action == AlarmAction::Get as i32 {
            self.server.linearize().await?;
            let alarm = AlarmType::try_from(req.alarm).unwrap_or(AlarmType::None);
            return Ok(Response::new(AlarmResponse {
                header: Some(self.server.header(self.revision()?)),
                alarms: self.alarms(alarm)?,
            }));
        }
        let mut resp: AlarmResponse = self.server.write(log_command::Op::Alarm(req)).await?;
        // Alarms change no key: the header names the store's revision as of the answer.
        resp.header = Some(self.server.header(self.revision()?));
        Ok(Response::new(resp))
    }

    async fn status(&self, _: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        let revision = self.revision()?;
        let metrics = self.server.raft().metrics().borrow_watched().clone();
        let db_size = db_size(&self.db_path);
        let is_learner = !metrics
            .membership_config
            .membership()
            .voter_ids()
            .any(|id| id == self.server.member_id());
        // Like etcd: "no leader" first, then every active alarm in its text form.
        let mut errors = Vec::new();
        if metrics.current_leader.is_none() {
            errors.push(NO_LEADER.to_string());
        }
        errors.extend(self.alarms(AlarmType::None)?.iter().map(alarm_text));
        Ok(Response::new(StatusResponse {
            header: Some(self.server.header(revision)),
            version: ETCD_API_VERSION.to_string(),
            db_size,
            leader: metrics.current_leader.unwrap_or(0),
            raft_index: metrics.last_log_index.unwrap_or(0),
            raft_term: metrics.current_term,
            raft_applied_index: metrics.last_applied.as_ref().map_or(0, |id| id.index),
            errors,
            db_size_in_use: db_size,
            is_learner,
            db_size_quota: i64::try_from(self.quota_bytes).unwrap_or(i64::MAX),
            ..Default::default()
        }))
    }

    /// redb can only rewrite its file with exclusive access to the database, which a serving
    /// member never has. What can be done online is done: two durable commits, after which
    /// pages freed by earlier (non-durable) transactions are reusable and free space at the end
    /// of the file is trimmed.
    async fn defragment(
        &self,
        _: Request<DefragmentRequest>,
    ) -> Result<Response<DefragmentResponse>, Status> {
        let db = self.server.db().clone();
        let before = db_size_bytes(&self.db_path);
        tokio::task::spawn_blocking(move || -> Result<(), redb::Error> {
            for _ in 0..2 {
                db.begin_write()?.commit()?;
            }
            Ok(())
        })
        .await
        .map_err(|e| Status::internal(format!("defragment task failed: {e}")))?
        .map_err(|e| Status::internal(format!("defragment failed: {e}")))?;
        let after = db_size_bytes(&self.db_path);
        tracing::info!(before, after, "defragment: released freed pages");
        Ok(Response::new(DefragmentResponse {
            header: Some(self.server.header(self.revision()?)),
        }))
    }

    async fn hash(&self, _: Request<HashRequest>) -> Result<Response<HashResponse>, Status> {
        let view = self.server.read_view().await?;
        let revision = baton_store::mvcc::current_revision(&view).map_err(kv_status)?;
        let hash = tokio::task::spawn_blocking(move || hash_all(&view))
            .await
            .map_err(|e| Status::internal(format!("hash task failed: {e}")))?
            .map_err(|e| Status::internal(format!("hash failed: {e}")))?;
        Ok(Response::new(HashResponse {
            header: Some(self.server.header(revision)),
            hash,
        }))
    }

    async fn hash_kv(
        &self,
        request: Request<HashKvRequest>,
    ) -> Result<Response<HashKvResponse>, Status> {
        let revision = request.into_inner().revision;
        let view = self.server.read_view().await?;
        let hashed = tokio::task::spawn_blocking(move || hash_kv(&view, revision))
            .await
            .map_err(|e| Status::internal(format!("hashkv task failed: {e}")))?
            .map_err(kv_status)?;
        Ok(Response::new(HashKvResponse {
            header: Some(self.server.header(hashed.current_revision)),
            hash: hashed.hash,
            compact_revision: hashed.compact_revision,
            hash_revision: hashed.hash_revision,
        }))
    }

    type SnapshotStream = Pin<Box<dyn Stream<Item = Result<SnapshotResponse, Status>> + Send>>;

    async fn snapshot(
        &self,
        _: Request<SnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        let view = self.server.read_view().await?;
        Ok(Response::new(Box::pin(snapshot_stream(view.into_txn()))))
    }

    /// Like etcd: only the leader accepts; the target must be a voting member; the call returns
    /// once the target leads.
    async fn move_leader(
        &self,
        request: Request<MoveLeaderRequest>,
    ) -> Result<Response<MoveLeaderResponse>, Status> {
        let target = request.into_inner().target_id;
        let me = self.server.member_id();
        let raft = self.server.raft();
        if self.server.leader() != Some(me) {
            return Err(Status::failed_precondition(NOT_LEADER));
        }
        let is_voter = raft
            .metrics()
            .borrow_watched()
            .membership_config
            .membership()
            .voter_ids()
            .any(|id| id == target);
        if !is_voter {
            return Err(Status::failed_precondition(BAD_TRANSFEREE));
        }
        if target != me {
            tracing::info!(to = format!("{target:x}"), "leadership transfer starting");
            raft.trigger()
                .transfer_leader(target)
                .await
                .map_err(|e| Status::unavailable(format!("raft stopped: {e}")))?;
            raft.wait(Some(Duration::from_millis(MOVE_LEADER_TIMEOUT_MS)))
                .current_leader(target, "leadership transfer")
                .await
                .map_err(|_| Status::unknown(TRANSFER_TIMED_OUT))?;
            tracing::info!(to = format!("{target:x}"), "leadership transfer finished");
        }
        Ok(Response::new(MoveLeaderResponse {
            header: Some(self.server.header(self.revision()?)),
        }))
    }

    async fn downgrade(
        &self,
        _: Request<DowngradeRequest>,
    ) -> Result<Response<DowngradeResponse>, Status> {
        Err(Status::unimplemented(
            "baton: downgrade is not supported (Baton has a single storage version)",
        ))
    }
}
