//! The built-in semaphore module on a 3-member cluster, called through every member (Baton
//! only: etcd has no semaphore recipe): permits go first come first served, a released or
//! lease-ended (revoked) permit passes to the next waiter, a waiter whose client gives up is withdrawn
//! through the log, stale fencing tokens are refused, and callers must agree on the count.

use anyhow::{Context, Result, ensure};
use baton_e2e::{Backend, Cluster, run_test};
use tokio::time::sleep;

use crate::modules::PARKED_PROOF;
use crate::recipe_clients::{LONG_TTL_S, Recipe, keys, returned, until_keys};

const NAME: &str = "e2e-sem";
const PERMITS: u32 = 2;

fn acquire_input() -> String {
    format!(r#"{{"name":"{NAME}","permits":{PERMITS}}}"#)
}

fn named() -> String {
    format!(r#"{{"name":"{NAME}"}}"#)
}

fn key(lease: i64) -> String {
    format!("{NAME}/contenders/{lease:x}")
}

fn token(output: &serde_json::Value) -> Result<i64> {
    output["token"].as_i64().context("no token")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permits_pass_in_arrival_order_across_members() {
    run_test(Backend::Baton, async {
        let cluster = Cluster::start(Backend::Baton, 3).await?;
        let sem = Recipe::ready(&cluster, "semaphore", ("holders", &named())).await?;
        let mut kv = cluster.client().await?;
        let mut leases = Vec::new();
        for _ in 0..5 {
            leases.push(kv.lease_grant(LONG_TTL_S, None).await?.id());
        }
        let (a, dying, c, d, quitter) = (leases[0], leases[1], leases[2], leases[3], leases[4]);

        // Two permits: a (member 0) and the short-lived holder (member 1) hold at once.
        let a_grant = sem.call(0, "acquire", &acquire_input(), a).await?;
        sem.call(1, "acquire", &acquire_input(), dying).await?;
        // c waits through member 2, then d through member 0, in that order.
        let c_waits = sem.park(2, sem.request("acquire", &acquire_input(), c));
        sleep(PARKED_PROOF).await;
        let d_waits = sem.park(0, sem.request("acquire", &acquire_input(), d));
        sleep(PARKED_PROOF).await;
        ensure!(
            !c_waits.is_finished() && !d_waits.is_finished(),
            "a third permit was granted"
        );
        let tried = sem
            .call(1, "try-acquire", &acquire_input(), quitter)
            .await?;
        ensure!(tried == serde_json::json!({"acquired": false}), "{tried}");

        // A waiter whose client gives up is withdrawn, and the line stays as it was.
        sem.give_up(1, sem.request("acquire", &acquire_input(), quitter))
            .await?;
        let mut want = vec![key(a), key(dying), key(c), key(d)];
        want.sort();
        until_keys(&mut kv, &format!("{NAME}/contenders/"), &want).await?;

        // The second holder's lease ends: its permit passes to c, the first in line.
        kv.lease_revoke(dying).await?;
        let c_grant = returned(c_waits).await?;
        ensure!(c_grant["key"] == key(c), "{c_grant}");
        ensure!(!d_waits.is_finished(), "d jumped the line");
        ensure!(token(&c_grant)? > token(&a_grant)?, "tokens grow");

        // a releases through member 1: d is granted.
        sem.call(1, "release", &named(), a).await?;
        let d_grant = returned(d_waits).await?;
        ensure!(d_grant["key"] == key(d), "{d_grant}");

        // a's token is stale now; d's works, through any member.
        let put = |token: i64| {
            format!(
                r#"{{"name":"{NAME}","token":{token},"key":"e2e-sem-fenced","value":"{token}"}}"#
            )
        };
        let stale = sem.call(2, "fenced-put", &put(token(&a_grant)?), a).await;
        let refused = stale.err().context("a stale token was accepted")?;
        ensure!(
            format!("{refused:#}").contains("stale fencing token"),
            "{refused:#}"
        );
        sem.call(2, "fenced-put", &put(token(&d_grant)?), d).await?;

        let holders = sem.call(2, "holders", &named(), 0).await?;
        ensure!(
            holders["permits"] == PERMITS && holders["waiting"] == 0,
            "{holders}"
        );
        ensure!(holders["holders"][0]["key"] == key(c), "{holders}");

        // Callers must agree on the count while the semaphore is in use.
        let other = format!(r#"{{"name":"{NAME}","permits":5}}"#);
        let mismatch = sem.call(0, "acquire", &other, quitter).await;
        let refused = mismatch
            .err()
            .context("a different permit count was accepted")?;
        ensure!(
            format!("{refused:#}").contains("has 2 permits, not 5"),
            "{refused:#}"
        );
        ensure!(
            !keys(&mut kv, NAME).await?.contains(&key(quitter)),
            "the refused caller queued"
        );
        Ok(())
    })
    .await;
}
