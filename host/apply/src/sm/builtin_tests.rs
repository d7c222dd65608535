//! When a built-in deploy replaces a name, and when it is kept out: the decision table on its
//! own (pure, on records), then the same cases applied as log commands on a real store,
//! including a deleted built-in's mark surviving a snapshot.

use redb::ReadableDatabase;

use crate::sm::builtin::{DeployPlan, LEGACY_BUILTIN_SET, plan, with_custom_section};
use crate::sm::module_tests::{apply_batch, builtin, refused, snapshot};
use baton_limits::LEGACY_BUILTIN_DEPLOY_INDEX_MAX;
use baton_proto::batonpb::{
    DeployEffect, ModuleDelete, ModuleDeploy, ModuleDeployed, ModuleOrigin, ModuleRecord,
    ModuleVersion, log_command::Op, log_reply,
};
use baton_store::storage::snapshot::restore_snapshot_file;
use baton_store::testing::TestStore;

const SET: u32 = 5;

fn version(version: u64, hash: u8, origin: ModuleOrigin, set: u32, index: u64) -> ModuleVersion {
    ModuleVersion {
        version,
        hash: vec![hash; 32],
        deployed_index: index,
        origin: origin as i32,
        builtin_set: set,
        ..Default::default()
    }
}

fn record(versions: Vec<ModuleVersion>) -> ModuleRecord {
    ModuleRecord { versions }
}

fn keep(effect: DeployEffect) -> DeployPlan {
    DeployPlan::Keep(effect)
}

/// (what, the name's record, a deleted built-in, the deploy's hash and set, expected plan).
type Case<'a> = (&'a str, &'a ModuleRecord, bool, &'a [u8], u32, DeployPlan);

#[test]
fn decision_table() {
    use DeployEffect::*;
    use ModuleOrigin::{Builtin, Unrecorded, User};
    let new = [9u8; 32];
    let empty = record(Vec::new());
    let user = record(vec![version(1, 1, User, 0, 7)]);
    let older_set = record(vec![version(1, 1, Builtin, SET - 1, 7)]);
    let same_set = record(vec![version(1, 1, Builtin, SET, 7)]);
    let newer_set = record(vec![version(1, 1, Builtin, SET + 1, 7)]);
    let over_builtin = record(vec![
        version(1, 1, Builtin, SET - 1, 7),
        version(2, 2, User, 0, 9),
    ]);
    let legacy = record(vec![version(1, 1, Unrecorded, 0, 12)]);
    let legacy_late = record(vec![version(
        1,
        1,
        Unrecorded,
        0,
        LEGACY_BUILTIN_DEPLOY_INDEX_MAX + 1,
    )]);
    let legacy_two = record(vec![
        version(1, 1, Unrecorded, 0, 12),
        version(2, 2, Unrecorded, 0, 13),
    ]);
    let cases: [Case<'_>; 16] = [
        ("new name", &empty, false, &new, SET, DeployPlan::Store),
        (
            "same bytes",
            &same_set,
            false,
            &[1; 32],
            SET,
            keep(DeploySameBytes),
        ),
        (
            "same bytes as a user's",
            &user,
            false,
            &[1; 32],
            SET,
            keep(DeploySameBytes),
        ),
        (
            "user module",
            &user,
            false,
            &new,
            SET,
            keep(DeployKeptUserModule),
        ),
        (
            "user version over a built-in",
            &over_builtin,
            false,
            &new,
            SET,
            keep(DeployKeptUserModule),
        ),
        (
            "deleted built-in",
            &empty,
            true,
            &new,
            SET,
            keep(DeployKeptDeleted),
        ),
        (
            "newer set stored",
            &newer_set,
            false,
            &new,
            SET,
            keep(DeployKeptNewerSet),
        ),
        (
            "older set stored",
            &older_set,
            false,
            &new,
            SET,
            DeployPlan::Store,
        ),
        (
            "same set, other bytes",
            &same_set,
            false,
            &new,
            SET,
            DeployPlan::Store,
        ),
        (
            "legacy built-in",
            &legacy,
            false,
            &new,
            SET,
            DeployPlan::Store,
        ),
        (
            "legacy built-in, its own set deploying",
            &legacy,
            false,
            &new,
            LEGACY_BUILTIN_SET,
            DeployPlan::Store,
        ),
        (
            "legacy version deployed late",
            &legacy_late,
            false,
            &new,
            SET,
            keep(DeployKeptUserModule),
        ),
        (
            "legacy name with two versions",
            &legacy_two,
            false,
            &new,
            SET,
            keep(DeployKeptUserModule),
        ),
        // A user's deploy replaces anything, built-in or not, deleted or not.
        (
            "user over newer set",
            &newer_set,
            false,
            &new,
            0,
            DeployPlan::Store,
        ),
        (
            "user over deleted built-in",
            &empty,
            true,
            &new,
            0,
            DeployPlan::Store,
        ),
        (
            "user, same bytes",
            &user,
            false,
            &[1; 32],
            0,
            keep(DeploySameBytes),
        ),
    ];
    for (what, record, deleted, hash, set, expected) in cases {
        assert_eq!(plan(record, deleted, hash, set), expected, "{what}");
    }
}

fn deploy(name: &str, component: &[u8], builtin_set: u32) -> Op {
    Op::ModuleDeploy(ModuleDeploy {
        name: name.to_string(),
        component: component.to_vec(),
        builtin_set,
    })
}

fn delete(name: &str) -> Op {
    Op::ModuleDelete(ModuleDelete {
        name: name.to_string(),
    })
}

/// Applies one command at `index` and returns its deploy reply.
fn deployed(store: &TestStore, index: u64, op: Op) -> ModuleDeployed {
    let out = apply_batch(store, index, vec![op]);
    match &out[0].reply.result {
        Some(log_reply::Result::ModuleDeployed(d)) => d.clone(),
        _ => panic!("not a deploy reply: {:?}", out[0].reply),
    }
}

fn describe(store: &TestStore, name: &str) -> Option<ModuleRecord> {
    crate::sm::module::describe(&store.db.begin_read().unwrap(), name).unwrap()
}

/// The counter module with other bytes (and hash): a second release of it.
fn counter_v(n: u8) -> Vec<u8> {
    with_custom_section(builtin("counter"), "baton-test", &[n])
}

#[test]
fn built_in_deploys_store_new_names_and_newer_sets_only() {
    let store = TestStore::new();
    let d = deployed(&store, 1, deploy("counter", &counter_v(1), SET));
    assert_eq!((d.version, d.effect()), (1, DeployEffect::DeployStored));
    let d = deployed(&store, 2, deploy("counter", &counter_v(1), SET));
    assert_eq!((d.version, d.effect()), (1, DeployEffect::DeploySameBytes));
    // An older release leading later does not downgrade.
    let d = deployed(&store, 3, deploy("counter", &counter_v(0), SET - 1));
    assert_eq!(
        (d.version, d.effect()),
        (1, DeployEffect::DeployKeptNewerSet)
    );
    let d = deployed(&store, 4, deploy("counter", &counter_v(2), SET + 1));
    assert_eq!((d.version, d.effect()), (2, DeployEffect::DeployStored));
    let versions = describe(&store, "counter").unwrap().versions;
    let provenance: Vec<_> = versions
        .iter()
        .map(|v| (v.version, v.origin(), v.builtin_set, v.deployed_index))
        .collect();
    assert_eq!(
        provenance,
        [
            (1, ModuleOrigin::Builtin, SET, 1),
            (2, ModuleOrigin::Builtin, SET + 1, 4)
        ]
    );
}

#[test]
fn a_users_module_is_never_replaced_by_a_built_in() {
    let store = TestStore::new();
    // The user took the name first (e.g. before a release shipped a built-in of that name).
    let d = deployed(&store, 1, deploy("counter", &counter_v(7), 0));
    assert_eq!(d.effect(), DeployEffect::DeployStored);
    let d = deployed(&store, 2, deploy("counter", builtin("counter"), SET));
    assert_eq!(
        (d.version, d.effect()),
        (1, DeployEffect::DeployKeptUserModule)
    );
    // The user replaces a built-in: later built-in deploys leave it too.
    let d = deployed(&store, 3, deploy("lock", builtin("lock"), SET));
    assert_eq!(d.effect(), DeployEffect::DeployStored);
    let d = deployed(&store, 4, deploy("lock", &counter_v(3), 0));
    assert_eq!((d.version, d.effect()), (2, DeployEffect::DeployStored));
    let d = deployed(&store, 5, deploy("lock", &counter_v(4), SET + 1));
    assert_eq!(
        (d.version, d.effect()),
        (2, DeployEffect::DeployKeptUserModule)
    );
    let record = describe(&store, "lock").unwrap();
    assert_eq!(record.versions[1].origin(), ModuleOrigin::User);
    assert_eq!(record.versions[1].builtin_set, 0);
}

#[test]
fn a_deleted_built_in_stays_deleted_across_a_snapshot() {
    let store = TestStore::new();
    deployed(&store, 1, deploy("queue", builtin("queue"), SET));
    let out = apply_batch(&store, 2, vec![delete("queue")]);
    assert!(refused(&out[0]).is_none(), "{:?}", out[0].reply);

    // The member that restores this snapshot never saw the delete's log entry.
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), snapshot(&store)).unwrap();
    let restored = TestStore::new();
    let len = file.as_file().metadata().unwrap().len();
    restore_snapshot_file(&restored.db, file.as_file(), 0, len).unwrap();

    for store in [&store, &restored] {
        let d = deployed(store, 3, deploy("queue", &counter_v(5), SET + 1));
        assert_eq!(
            (d.version, d.effect()),
            (0, DeployEffect::DeployKeptDeleted)
        );
        assert!(describe(store, "queue").is_none());
        // The user may take the name back, with any bytes.
        let d = deployed(store, 4, deploy("queue", builtin("queue"), 0));
        assert_eq!((d.version, d.effect()), (1, DeployEffect::DeployStored));
    }
    assert_eq!(snapshot(&store), snapshot(&restored));
}

#[test]
fn a_name_a_user_deleted_is_free_for_a_built_in() {
    // Only built-ins leave a mark when deleted: a user's module of a name a later release
    // ships does not keep that built-in out once the user removes it.
    let store = TestStore::new();
    deployed(&store, 1, deploy("queue", &counter_v(1), 0));
    apply_batch(&store, 2, vec![delete("queue")]);
    let d = deployed(&store, 3, deploy("queue", builtin("queue"), SET));
    assert_eq!((d.version, d.effect()), (1, DeployEffect::DeployStored));
}

#[test]
fn a_version_stored_without_origin_early_in_the_log_counts_as_a_built_in() {
    // What a Baton recording no origins left behind: its founding deploys, at low indexes.
    let store = TestStore::new();
    let legacy = Op::ModuleDeploy(ModuleDeploy {
        name: "lock".into(),
        component: builtin("lock").to_vec(),
        builtin_set: 0,
    });
    deployed(&store, 5, legacy.clone());
    deployed(
        &store,
        LEGACY_BUILTIN_DEPLOY_INDEX_MAX + 1,
        deploy("queue", builtin("queue"), 0),
    );
    // Rewrite them as that Baton stored them: no origin.
    {
        let txn = store.db.begin_write().unwrap();
        {
            let mut names = txn
                .open_table(baton_store::storage::schema::MODULES)
                .unwrap();
            for name in ["lock", "queue"] {
                let mut record = describe(&store, name).unwrap();
                record.versions[0].origin = ModuleOrigin::Unrecorded as i32;
                let bytes = prost::Message::encode_to_vec(&record);
                names.insert(name, bytes.as_slice()).unwrap();
            }
        }
        txn.commit().unwrap();
    }
    let d = deployed(
        &store,
        200,
        deploy("lock", &counter_v(1), LEGACY_BUILTIN_SET + 1),
    );
    assert_eq!((d.version, d.effect()), (2, DeployEffect::DeployStored));
    let d = deployed(
        &store,
        201,
        deploy("queue", &counter_v(1), LEGACY_BUILTIN_SET + 1),
    );
    assert_eq!(
        (d.version, d.effect()),
        (1, DeployEffect::DeployKeptUserModule)
    );
}
