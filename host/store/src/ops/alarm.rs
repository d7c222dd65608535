//! Alarms as replicated state (etcd's `v3alarm` store and its "capped" applier): which members
//! raised which alarm, and the writes refused while NOSPACE is raised.
//!
//! Like etcd 3.4, NOSPACE refuses Put and a Txn containing a Put (etcd also refuses LeaseGrant:
//! a lease command belongs in `baton_apply::sm::command`'s `stores_value` too); Range, DeleteRange,
//! Compaction and a Txn that only deletes or reads still work, so an operator can free space.

use redb::{ReadTransaction, ReadableTable, WriteTransaction};

use crate::mvcc::error::StorageError;
use crate::storage::schema::ALARMS;
use baton_proto::etcdserverpb::alarm_request::AlarmAction;
use baton_proto::etcdserverpb::request_op::Request as TxnOp;
use baton_proto::etcdserverpb::{AlarmMember, AlarmRequest, AlarmResponse, AlarmType, TxnRequest};

/// etcd's `ErrGRPCNoSpace` message (gRPC code RESOURCE_EXHAUSTED).
pub const NO_SPACE: &str = "etcdserver: mvcc: database space exceeded";

/// Applies an alarm request: ACTIVATE records (member, alarm) and answers it, DEACTIVATE removes
/// it and answers it only if it was there, GET lists alarms of the given type (NONE: all).
pub fn apply_alarm(
    txn: &WriteTransaction,
    req: &AlarmRequest,
) -> Result<AlarmResponse, StorageError> {
    let alarm = AlarmType::try_from(req.alarm).unwrap_or(AlarmType::None);
    let member = AlarmMember {
        member_id: req.member_id,
        alarm: alarm as i32,
    };
    let mut table = txn.open_table(ALARMS)?;
    let alarms = match AlarmAction::try_from(req.action) {
        Ok(AlarmAction::Activate) if alarm != AlarmType::None => {
            table.insert((req.member_id, alarm as i32), ())?;
            tracing::warn!(
                member = format!("{:x}", req.member_id),
                ?alarm,
                "alarm raised"
            );
            vec![member]
        }
        Ok(AlarmAction::Deactivate) => {
            let removed = table.remove((req.member_id, alarm as i32))?.is_some();
            if removed {
                tracing::info!(
                    member = format!("{:x}", req.member_id),
                    ?alarm,
                    "alarm cleared"
                );
            }
            if removed { vec![member] } else { Vec::new() }
        }
        Ok(AlarmAction::Get) => collect(&table, alarm)?,
        // ACTIVATE of NONE, or an action this version does not know: nothing changes.
        _ => Vec::new(),
    };
    Ok(AlarmResponse {
        header: None,
        alarms,
    })
}

/// Active alarms of type `alarm` (NONE: every alarm), ordered by member id then type.
pub fn list_alarms(
    txn: &ReadTransaction,
    alarm: AlarmType,
) -> Result<Vec<AlarmMember>, StorageError> {
    collect(&txn.open_table(ALARMS)?, alarm)
}

fn collect(
    table: &impl ReadableTable<(u64, i32), ()>,
    alarm: AlarmType,
) -> Result<Vec<AlarmMember>, StorageError> {
    let mut out = Vec::new();
    for entry in table.iter()? {
        let (k, _) = entry?;
        let (member_id, kind) = k.value();
        if alarm == AlarmType::None || kind == alarm as i32 {
            out.push(AlarmMember {
                member_id,
                alarm: kind,
            });
        }
    }
    Ok(out)
}

/// Whether any member has NOSPACE raised, as seen by `txn`.
pub fn no_space(txn: &WriteTransaction) -> Result<bool, StorageError> {
    let table = txn.open_table(ALARMS)?;
    Ok(!collect(&table, AlarmType::Nospace)?.is_empty())
}

/// Whether a txn would store a value (etcd counts only puts as quota cost), in any branch,
/// nested txns included.
pub fn txn_puts(txn: &TxnRequest) -> bool {
    txn.success
        .iter()
        .chain(&txn.failure)
        .any(|op| match &op.request {
            Some(TxnOp::RequestPut(_)) => true,
            Some(TxnOp::RequestTxn(inner)) => txn_puts(inner),
            _ => false,
        })
}

/// etcd's text form of an alarm (gogoproto's `String()`), as `Status.errors` lists it.
pub fn alarm_text(member: &AlarmMember) -> String {
    let name = AlarmType::try_from(member.alarm).map_or_else(
        |_| member.alarm.to_string(),
        |a| a.as_str_name().to_string(),
    );
    format!("memberID:{} alarm:{} ", member.member_id, name)
}

#[cfg(test)]
mod tests {
    use redb::{Database, ReadableDatabase};

    use super::*;

    fn db() -> (tempfile::TempDir, Database) {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::create(dir.path().join("s.redb")).unwrap();
        crate::storage::init_schema(&db).unwrap();
        (dir, db)
    }

    fn apply(db: &Database, action: AlarmAction, member_id: u64, alarm: AlarmType) -> Vec<u64> {
        let txn = db.begin_write().unwrap();
        let req = AlarmRequest {
            action: action as i32,
            member_id,
            alarm: alarm as i32,
        };
        let resp = apply_alarm(&txn, &req).unwrap();
        txn.commit().unwrap();
        resp.alarms.iter().map(|m| m.member_id).collect()
    }

    #[test]
    fn activate_deactivate_and_list() {
        let (_dir, db) = db();
        assert_eq!(
            apply(&db, AlarmAction::Activate, 1, AlarmType::None),
            Vec::<u64>::new()
        );
        assert_eq!(
            apply(&db, AlarmAction::Activate, 2, AlarmType::Nospace),
            vec![2]
        );
        assert_eq!(
            apply(&db, AlarmAction::Activate, 2, AlarmType::Nospace),
            vec![2]
        );
        assert_eq!(
            apply(&db, AlarmAction::Activate, 1, AlarmType::Corrupt),
            vec![1]
        );
        assert_eq!(apply(&db, AlarmAction::Get, 0, AlarmType::None), vec![1, 2]);
        assert_eq!(apply(&db, AlarmAction::Get, 0, AlarmType::Nospace), vec![2]);
        assert!(no_space(&db.begin_write().unwrap()).unwrap());
        assert_eq!(
            apply(&db, AlarmAction::Deactivate, 3, AlarmType::Nospace),
            Vec::<u64>::new()
        );
        assert_eq!(
            apply(&db, AlarmAction::Deactivate, 2, AlarmType::Nospace),
            vec![2]
        );
        assert!(!no_space(&db.begin_write().unwrap()).unwrap());
        let listed = list_alarms(&db.begin_read().unwrap(), AlarmType::None).unwrap();
        assert_eq!(alarm_text(&listed[0]), "memberID:1 alarm:CORRUPT ");
    }

    #[test]
    fn only_puts_cost_space() {
        use baton_proto::etcdserverpb::{DeleteRangeRequest, PutRequest, RequestOp};
        let put = RequestOp {
            request: Some(TxnOp::RequestPut(PutRequest::default())),
        };
        let del = RequestOp {
            request: Some(TxnOp::RequestDeleteRange(DeleteRangeRequest::default())),
        };
        let deletes = TxnRequest {
            success: vec![del.clone()],
            ..Default::default()
        };
        assert!(!txn_puts(&deletes));
        let nested = TxnRequest {
            failure: vec![
                del,
                RequestOp {
                    request: Some(TxnOp::RequestTxn(TxnRequest {
                        success: vec![put],
                        ..Default::default()
                    })),
                },
            ],
            ..Default::default()
        };
        assert!(txn_puts(&nested));
    }
}
