//! etcd's `Maintenance` service: `Status` (what `etcdctl endpoint status` shows) and `Alarm`.
//! The rest (Hash, HashKV, Snapshot, Defragment, MoveLeader, Downgrade) answer UNIMPLEMENTED
//! with a message saying so, until they are built.

use openraft::type_config::async_runtime::WatchReceiver;
use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use tonic::{Request, Response, Status};

use crate::proto::etcdserverpb::maintenance_server::Maintenance;
use crate::proto::etcdserverpb::{
    AlarmRequest, AlarmResponse, DefragmentRequest, DefragmentResponse, DowngradeRequest,
    DowngradeResponse, HashKvRequest, HashKvResponse, HashRequest, HashResponse, MoveLeaderRequest,
    MoveLeaderResponse, SnapshotRequest, SnapshotResponse, StatusRequest, StatusResponse,
};
use crate::server::Server;

/// The etcd API version Baton speaks; clients use it to decide which features to use.
pub const ETCD_API_VERSION: &str = "3.5.0";

pub struct MaintenanceService {
    server: Arc<Server>,
    db_path: std::path::PathBuf,
}

impl MaintenanceService {
    pub fn new(server: Arc<Server>, db_path: std::path::PathBuf) -> Self {
        Self { server, db_path }
    }
}

fn not_yet(what: &str) -> Status {
    Status::unimplemented(format!(
        "baton: {what} is not supported by this version of Baton yet"
    ))
}

#[tonic::async_trait]
impl Maintenance for MaintenanceService {
    async fn alarm(&self, _: Request<AlarmRequest>) -> Result<Response<AlarmResponse>, Status> {
        // No alarm is ever raised yet (there is no space quota), so the list is truly empty.
        let view = self.server.read_view()?;
        let revision = crate::mvcc::current_revision(&view)?;
        Ok(Response::new(AlarmResponse {
            header: Some(self.server.header(revision)),
            alarms: Vec::new(),
        }))
    }

    async fn status(&self, _: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        let view = self.server.read_view()?;
        let revision = crate::mvcc::current_revision(&view)?;
        let metrics = self.server.raft().metrics().borrow_watched().clone();
        let db_size = std::fs::metadata(&self.db_path)
            .map_or(0, |m| i64::try_from(m.len()).unwrap_or(i64::MAX));
        let is_learner = !metrics
            .membership_config
            .membership()
            .voter_ids()
            .any(|id| id == self.server.member_id());
        Ok(Response::new(StatusResponse {
            header: Some(self.server.header(revision)),
            version: ETCD_API_VERSION.to_string(),
            db_size,
            leader: metrics.current_leader.unwrap_or(0),
            raft_index: metrics.last_log_index.unwrap_or(0),
            raft_term: metrics.current_term,
            raft_applied_index: metrics.last_applied.as_ref().map_or(0, |id| id.index),
            errors: Vec::new(),
            db_size_in_use: db_size,
            is_learner,
            ..Default::default()
        }))
    }

    async fn defragment(
        &self,
        _: Request<DefragmentRequest>,
    ) -> Result<Response<DefragmentResponse>, Status> {
        Err(not_yet("defragment"))
    }

    async fn hash(&self, _: Request<HashRequest>) -> Result<Response<HashResponse>, Status> {
        Err(not_yet("hash"))
    }

    async fn hash_kv(&self, _: Request<HashKvRequest>) -> Result<Response<HashKvResponse>, Status> {
        Err(not_yet("hashkv"))
    }

    type SnapshotStream = Pin<Box<dyn Stream<Item = Result<SnapshotResponse, Status>> + Send>>;

    async fn snapshot(
        &self,
        _: Request<SnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        Err(not_yet("snapshot"))
    }

    async fn move_leader(
        &self,
        _: Request<MoveLeaderRequest>,
    ) -> Result<Response<MoveLeaderResponse>, Status> {
        Err(not_yet("move-leader"))
    }

    async fn downgrade(
        &self,
        _: Request<DowngradeRequest>,
    ) -> Result<Response<DowngradeResponse>, Status> {
        Err(not_yet("downgrade"))
    }
}
