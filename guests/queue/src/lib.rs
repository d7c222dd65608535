//! Queue: a FIFO of items under `<queue>/`, in key order, with delayed delivery and safe
//! consumption. `push` appends one item; `pop` takes the next and, when nothing is deliverable,
//! waits server-side (for a push, or in leader time for the earliest delayed item or expiring
//! reservation), so a consumer makes one call instead of polling. Ready items are plain keys:
//! `etcdctl put jobs/x y` enqueues too, and `etcdctl get --prefix jobs/` lists them.
//!
//! Guarantees:
//! - a delayed item is never delivered before leader time `deliver_at_ms` (decided from the
//!   call's proposal time, so every replica decides alike);
//! - a reserved item is delivered to nobody else until its reservation ends: it is acked
//!   (gone for good), nacked, its visibility timeout passes, or the consumer's lease ends
//!   (whichever the consumer chose); then the next `pop`/`reserve` redelivers it first;
//! - `ack`/`nack` take the reservation's token and are refused once the reservation is no
//!   longer the caller's (timed out, lease ended, acked, nacked), so a slow consumer cannot
//!   delete an item someone else now holds.
//!
//! What a consumer takes next: a reservation that ended (earliest first), then a delayed item
//! that is due (earliest first), then the first ready item in key order.
//!
//! Functions (JSON in and out; a `key` is where the item lives while ready):
//! - `push {"queue":"jobs","value":"a"}` → `{"key":"jobs/00000000000000000042","value":"a"}`;
//!   with `"delay_ms":5000` or `"deliver_at_ms":1700000005000` the item waits, and the reply
//!   adds `"deliver_at_ms"`.
//! - `pop {"queue":"jobs"}` → `{"key":"jobs/…42","value":"a"}`: takes the item for good (plus
//!   `"deliveries":n` for an item reserved n times before).
//! - `reserve {"queue":"jobs","visibility_ms":30000}` (the default) or
//!   `reserve {"queue":"jobs","until_lease_ends":true}` (with the caller's lease) →
//!   `{"key":…,"value":…,"token":57,"deliveries":1,"visible_at_ms":…}` (no `visible_at_ms`
//!   for a lease-bound reservation).
//! - `ack {"queue":"jobs","token":57}` → `{"acked":"jobs/…42"}`;
//!   `nack {"queue":"jobs","token":57}` (optionally `"delay_ms"` before redelivery) →
//!   `{"nacked":"jobs/…42","visible_at_ms":…}`.
//! - `peek {"queue":"jobs"}` → the item `pop` would take now, or `null`; `length` →
//!   `{"ready":3,"delayed":1,"reserved":2}` (ready counts ended reservations and due items).
//!   Both write nothing, so they may be called read-only.
//!
//! Key layout (bookkeeping under `__<queue>/`, outside the ready prefix, as etcd's recipes keep
//! their `__<prefix>` keys):
//! - ready item: `<queue>/<anything>`; `push` uses `<queue>/<call revision, 20 digits>`;
//! - delayed item: `__<queue>/delayed/<deliver_at_ms, 20 digits>/<push revision, 20 digits>`,
//!   value the item's; delivered under `<queue>/<push revision>`;
//! - reservation: `__<queue>/reserved/<token, 20 digits>`, value a JSON record (item key and
//!   value, deliveries, `until_ms` or `lease`), plus one of
//!   `__<queue>/timeouts/<until_ms, 20 digits>/<token, 20 digits>` (the expiry index) or
//!   `__<queue>/alive/<token, 20 digits>` attached to the consumer's lease (gone when it ends).
//!
//! A `pop` or `reserve` that waited has written nothing of its own, so abandoning it (client
//! deadline, cancel, disconnect) leaves nothing behind and takes no item. A `reserve` whose
//! client left just as it was granted is redelivered when its reservation ends; a `pop` in that
//! window loses its item: consumers that must not lose items use `reserve`.

use baton_sdk::json as serde_json;
use baton_sdk::store::{self, Range};
use baton_sdk::{Module, Reply, context, from_json};
use serde::{Deserialize, Serialize};

/// What `reserve` hides an item for when the caller names neither a timeout nor its lease
/// (as SQS's default visibility timeout).
const VISIBILITY_MS_DEFAULT: u64 = 30_000;
/// The longest visibility timeout or nack delay (as SQS's): beyond it a consumer should use
/// its lease.
const VISIBILITY_MS_MAX: u64 = 12 * 60 * 60 * 1000;
/// The furthest ahead an item may be delayed.
const DELAY_MS_MAX: u64 = 365 * 24 * 60 * 60 * 1000;
/// Reservation records read per range while looking for one whose consumer's lease ended.
const RESERVED_PAGE_KEYS: u32 = 256;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Push {
    queue: String,
    value: String,
    #[serde(default)]
    delay_ms: Option<u64>,
    #[serde(default)]
    deliver_at_ms: Option<u64>,
}

#[derive(Deserialize)]
struct Named {
    queue: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Reserve {
    queue: String,
    #[serde(default)]
    visibility_ms: Option<u64>,
    #[serde(default)]
    until_lease_ends: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settle {
    queue: String,
    token: i64,
    /// Only for `nack`: how long the item stays hidden before redelivery.
    #[serde(default)]
    delay_ms: Option<u64>,
}

/// A reservation as stored under `__<queue>/reserved/<token>`.
#[derive(Serialize, Deserialize, Debug, Clone)]
struct Reservation {
    key: String,
    value: String,
    /// How many reservations of the item there have been, this one included.
    deliveries: u32,
    /// Leader time the reservation ends at, for a timed one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    until_ms: Option<u64>,
    /// The consumer's lease, for a lease-bound one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    lease: Option<i64>,
}

#[derive(Serialize)]
struct Item {
    key: String,
    value: String,
    /// Left out when 0, so a plain pop answers as it always did.
    #[serde(skip_serializing_if = "is_zero")]
    deliveries: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// The keys of one queue.
struct Layout {
    queue: String,
}

fn n20(n: impl std::fmt::Display) -> String {
    format!("{n:0>20}")
}

impl Layout {
    fn new(queue: String) -> Result<Self, String> {
        if queue.is_empty() {
            return Err("queue: name the queue (\"queue\":\"jobs\")".into());
        }
        Ok(Layout { queue })
    }

    fn ready(&self) -> String {
        format!("{}/", self.queue)
    }

    fn book(&self, part: &str) -> String {
        format!("__{}/{part}/", self.queue)
    }

    fn delayed(&self) -> String {
        self.book("delayed")
    }

    fn reserved(&self) -> String {
        self.book("reserved")
    }

    fn timeouts(&self) -> String {
        self.book("timeouts")
    }

    fn alive(&self) -> String {
        self.book("alive")
    }

    fn reserved_key(&self, token: i64) -> String {
        format!("{}{}", self.reserved(), n20(token))
    }

    fn timeout_key(&self, until_ms: u64, token: i64) -> String {
        format!("{}{}/{}", self.timeouts(), n20(until_ms), n20(token))
    }

    fn alive_key(&self, token: i64) -> String {
        format!("{}{}", self.alive(), n20(token))
    }

    /// Where an item pushed at `revision` is (or will be) ready.
    fn item_key(&self, revision: i64) -> String {
        format!("{}{}", self.ready(), n20(revision))
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The two numbers after `prefix` in a `<prefix><a>/<b>` bookkeeping key.
fn two_numbers(key: &[u8], prefix: &str) -> Result<(u64, i64), String> {
    let bad = || format!("queue: malformed bookkeeping key {:?}", text(key));
    let rest = key.strip_prefix(prefix.as_bytes()).ok_or_else(bad)?;
    let rest = std::str::from_utf8(rest).map_err(|_| bad())?;
    let (a, b) = rest.split_once('/').ok_or_else(bad)?;
    Ok((a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?))
}

/// What the next consumer takes, and where it is now.
enum Next {
    /// A reservation that ended (timed out, nacked, or its consumer's lease ended).
    Redelivery { token: i64, record: Reservation },
    /// A delayed item now due, stored at `book_key`.
    Due { book_key: Vec<u8>, item: Item },
    /// A ready item, stored at its own key.
    Ready(Item),
}

impl Next {
    fn item(&self) -> Item {
        match self {
            Next::Redelivery { record, .. } => Item {
                key: record.key.clone(),
                value: record.value.clone(),
                deliveries: record.deliveries,
            },
            Next::Due { item, .. } | Next::Ready(item) => Item {
                key: item.key.clone(),
                value: item.value.clone(),
                deliveries: item.deliveries,
            },
        }
    }
}

fn reservation(l: &Layout, token: i64) -> Result<Option<Reservation>, String> {
    store::get_value(l.reserved_key(token))
        .map(|v| serde_json::from_slice(&v).map_err(|e| format!("queue: bad reservation: {e}")))
        .transpose()
}

/// The timed reservation that ended first, if one has ended by `now_ms`.
fn expired_timeout(l: &Layout, now_ms: u64) -> Result<Option<(i64, Reservation)>, String> {
    let Some(first) = Range::prefix(l.timeouts()).keys_only().first() else {
        return Ok(None);
    };
    let (until_ms, token) = two_numbers(&first.key, &l.timeouts())?;
    if until_ms > now_ms {
        return Ok(None);
    }
    let record = reservation(l, token)?.ok_or("queue: expiry index without its reservation")?;
    Ok(Some((token, record)))
}

/// The oldest lease-bound reservation whose consumer's lease ended. Cheap when none did: every
/// reservation has a timeout key or a live lease's marker, so the counts match.
fn lease_ended(l: &Layout) -> Result<Option<(i64, Reservation)>, String> {
    let reserved = Range::prefix(l.reserved()).count();
    let held = Range::prefix(l.timeouts()).count() + Range::prefix(l.alive()).count();
    if reserved <= held {
        return Ok(None);
    }
    let mut from = l.reserved().into_bytes();
    let end = store::prefix_end(l.reserved().as_bytes());
    loop {
        let page = Range::new(&from, &end).limit(RESERVED_PAGE_KEYS).get();
        for kv in &page.kvs {
            let record: Reservation = serde_json::from_slice(&kv.value)
                .map_err(|e| format!("queue: bad reservation: {e}"))?;
            let token: i64 = text(&kv.key[l.reserved().len()..])
                .parse()
                .map_err(|_| format!("queue: malformed reservation key {:?}", text(&kv.key)))?;
            if record.lease.is_some() && store::get(l.alive_key(token)).is_none() {
                return Ok(Some((token, record)));
            }
        }
        match page.kvs.last() {
            Some(last) if page.more => {
                from = last.key.clone();
                from.push(0);
            }
            _ => return Ok(None),
        }
    }
}

/// The earliest delayed item, with the time it is due.
fn first_delayed(l: &Layout) -> Result<Option<(u64, i64, store::Kv)>, String> {
    let Some(first) = Range::prefix(l.delayed()).first() else {
        return Ok(None);
    };
    let (at_ms, pushed) = two_numbers(&first.key, &l.delayed())?;
    Ok(Some((at_ms, pushed, first)))
}

/// What a consumer would take at leader time `now_ms`, deciding nothing yet.
fn next(l: &Layout, now_ms: u64) -> Result<Option<Next>, String> {
    if let Some((token, record)) = expired_timeout(l, now_ms)? {
        return Ok(Some(Next::Redelivery { token, record }));
    }
    if let Some((token, record)) = lease_ended(l)? {
        return Ok(Some(Next::Redelivery { token, record }));
    }
    if let Some((at_ms, pushed, kv)) = first_delayed(l)?
        && at_ms <= now_ms
    {
        let item = Item {
            key: l.item_key(pushed),
            value: text(&kv.value),
            deliveries: 0,
        };
        return Ok(Some(Next::Due {
            book_key: kv.key,
            item,
        }));
    }
    Ok(Range::prefix(l.ready()).first().map(|kv| {
        Next::Ready(Item {
            key: text(&kv.key),
            value: text(&kv.value),
            deliveries: 0,
        })
    }))
}

/// Removes `next` from wherever it is and returns it.
fn take(l: &Layout, next: Next) -> Item {
    let item = next.item();
    match next {
        Next::Redelivery { token, record } => forget(l, token, &record),
        Next::Due { book_key, .. } => {
            store::delete(book_key);
        }
        Next::Ready(item) => {
            store::delete(&item.key);
        }
    }
    item
}

/// Deletes reservation `token` and its index or marker.
fn forget(l: &Layout, token: i64, record: &Reservation) {
    store::delete(l.reserved_key(token));
    if let Some(until_ms) = record.until_ms {
        store::delete(l.timeout_key(until_ms, token));
    }
    if record.lease.is_some() {
        store::delete(l.alive_key(token));
    }
}

/// Waits until something may be deliverable: a push or nack, a sooner delayed item, a
/// lease-bound reservation's lease ending (all changes under the ready or bookkeeping
/// prefixes), the earliest delayed item or reservation coming due; and `own_lease` ending, if
/// given.
fn wait(l: &Layout, own_lease: Option<i64>) -> Result<Reply, String> {
    let mut wait = Reply::wait_for()
        .prefix(l.ready())
        .prefix(format!("__{}/", l.queue));
    if let Some((at_ms, _, _)) = first_delayed(l)? {
        wait = wait.until_ms(at_ms);
    }
    if let Some(first) = Range::prefix(l.timeouts()).keys_only().first() {
        wait = wait.until_ms(two_numbers(&first.key, &l.timeouts())?.0);
    }
    if let Some(lease) = own_lease {
        wait = wait.lease(lease);
    }
    Ok(wait.into())
}

fn push(push: Push) -> Result<Reply, String> {
    let l = Layout::new(push.queue)?;
    let now_ms = context::proposal_time_ms();
    let deliver_at_ms = match (push.delay_ms, push.deliver_at_ms) {
        (Some(_), Some(_)) => return Err("queue: give delay_ms or deliver_at_ms, not both".into()),
        (Some(delay), None) if delay > DELAY_MS_MAX => {
            return Err(format!("queue: delay_ms above {DELAY_MS_MAX}"));
        }
        (Some(delay), None) => Some(now_ms.saturating_add(delay)),
        (None, Some(at)) if at.saturating_sub(now_ms) > DELAY_MS_MAX => {
            return Err(format!(
                "queue: deliver_at_ms more than {DELAY_MS_MAX} ms ahead"
            ));
        }
        (None, at) => at,
    };
    // The call's revision orders items across calls; zero-padded so key order is revision
    // order.
    let revision = context::revision();
    let key = l.item_key(revision);
    if store::get(&key).is_some() {
        return Err("queue: one push per call".to_string());
    }
    match deliver_at_ms.filter(|at| *at > now_ms) {
        Some(at_ms) => {
            let book_key = format!("{}{}/{}", l.delayed(), n20(at_ms), n20(revision));
            store::put(book_key, &push.value);
            Reply::json(&serde_json::json!({
                "key": key, "value": push.value, "deliver_at_ms": at_ms,
            }))
        }
        None => {
            store::put(&key, &push.value);
            Reply::json(&serde_json::json!({ "key": key, "value": push.value }))
        }
    }
}

fn pop(l: &Layout) -> Result<Reply, String> {
    match next(l, context::proposal_time_ms())? {
        Some(next) => Reply::json(&take(l, next)),
        None => wait(l, None),
    }
}

fn reserve(r: Reserve) -> Result<Reply, String> {
    let l = Layout::new(r.queue)?;
    let now_ms = context::proposal_time_ms();
    let lease = match (r.until_lease_ends, r.visibility_ms) {
        (true, Some(_)) => {
            return Err("queue: give visibility_ms or until_lease_ends, not both".into());
        }
        (true, None) => match context::caller_lease() {
            0 => return Err("queue: until_lease_ends needs the call's lease".into()),
            // A waiter whose lease ended stops rather than waiting for nobody.
            lease if store::lease(lease).is_none() => {
                return Err("etcdserver: requested lease not found".into());
            }
            lease => Some(lease),
        },
        (false, Some(ms)) if ms == 0 || ms > VISIBILITY_MS_MAX => {
            return Err(format!(
                "queue: visibility_ms must be 1..={VISIBILITY_MS_MAX}"
            ));
        }
        (false, _) => None,
    };
    let Some(next) = next(&l, now_ms)? else {
        return wait(&l, lease);
    };
    let item = take(&l, next);
    let token = context::revision();
    let until_ms = match lease {
        Some(_) => None,
        None => Some(now_ms.saturating_add(r.visibility_ms.unwrap_or(VISIBILITY_MS_DEFAULT))),
    };
    let record = Reservation {
        key: item.key,
        value: item.value,
        deliveries: item.deliveries.saturating_add(1),
        until_ms,
        lease,
    };
    hold(&l, token, &record)?;
    let mut reply = serde_json::json!({
        "key": record.key, "value": record.value, "token": token,
        "deliveries": record.deliveries,
    });
    if let Some(until_ms) = until_ms {
        reply["visible_at_ms"] = until_ms.into();
    }
    Reply::json(&reply)
}

/// Stores reservation `token` with its index or lease marker.
fn hold(l: &Layout, token: i64, record: &Reservation) -> Result<(), String> {
    let json = serde_json::to_vec(record).map_err(|e| format!("queue: {e}"))?;
    store::put(l.reserved_key(token), json);
    if let Some(until_ms) = record.until_ms {
        store::put(l.timeout_key(until_ms, token), "");
    }
    if let Some(lease) = record.lease {
        store::put_with_lease(l.alive_key(token), "", lease);
    }
    Ok(())
}

/// Reservation `s.token`, if it is still its consumer's at `now_ms`.
fn still_held(l: &Layout, s: &Settle, now_ms: u64) -> Result<Reservation, String> {
    let gone = |why: &str| format!("queue {}: reservation {} {why}", l.queue, s.token);
    let record = reservation(l, s.token)?
        .ok_or_else(|| gone("is not held (acked, nacked or redelivered)"))?;
    if record.until_ms.is_some_and(|until| until <= now_ms) {
        return Err(gone("timed out: the item is redelivered"));
    }
    if record.lease.is_some() && store::get(l.alive_key(s.token)).is_none() {
        return Err(gone(
            "ended with its consumer's lease: the item is redelivered",
        ));
    }
    Ok(record)
}

fn ack(s: Settle) -> Result<Reply, String> {
    let l = Layout::new(s.queue.clone())?;
    if s.delay_ms.is_some() {
        return Err("queue: ack takes no delay_ms".into());
    }
    let record = still_held(&l, &s, context::proposal_time_ms())?;
    forget(&l, s.token, &record);
    Reply::json(&serde_json::json!({ "acked": record.key }))
}

/// Ends the reservation now (or after `delay_ms`): the item is redelivered first, keeping its
/// delivery count.
fn nack(s: Settle) -> Result<Reply, String> {
    let l = Layout::new(s.queue.clone())?;
    let now_ms = context::proposal_time_ms();
    let delay_ms = s.delay_ms.unwrap_or(0);
    if delay_ms > VISIBILITY_MS_MAX {
        return Err(format!("queue: delay_ms above {VISIBILITY_MS_MAX}"));
    }
    let record = still_held(&l, &s, now_ms)?;
    forget(&l, s.token, &record);
    let until_ms = now_ms.saturating_add(delay_ms);
    let ended = Reservation {
        until_ms: Some(until_ms),
        lease: None,
        ..record
    };
    hold(&l, s.token, &ended)?;
    Reply::json(&serde_json::json!({ "nacked": ended.key, "visible_at_ms": until_ms }))
}

fn peek(l: &Layout) -> Result<Reply, String> {
    let next = next(l, context::proposal_time_ms())?;
    Reply::json(&next.map(|n| n.item()))
}

fn length(l: &Layout) -> Result<Reply, String> {
    let now_ms = context::proposal_time_ms();
    let due_end = |prefix: String| format!("{prefix}{}", n20(now_ms.saturating_add(1)));
    let ready = Range::prefix(l.ready()).count();
    let delayed = Range::prefix(l.delayed()).count();
    let due = Range::new(l.delayed(), due_end(l.delayed())).count();
    let reserved = Range::prefix(l.reserved()).count();
    let expired = Range::new(l.timeouts(), due_end(l.timeouts())).count();
    let lease_bound = reserved.saturating_sub(Range::prefix(l.timeouts()).count());
    let ended = lease_bound.saturating_sub(Range::prefix(l.alive()).count());
    Reply::json(&serde_json::json!({
        "ready": ready + due + expired + ended,
        "delayed": delayed.saturating_sub(due),
        "reserved": reserved.saturating_sub(expired).saturating_sub(ended),
    }))
}

struct Queue;

baton_sdk::functions! {
    "push" writes {
        summary: "Appends an item, ready now or after a delay.",
        input: "queue, value; delay_ms or deliver_at_ms (optional)",
        example: r#"{"queue":"jobs","value":"a"}"# => r#"{"key":"jobs/00000000000000000042","value":"a"}"#,
    }
    "pop" writes waits {
        summary: "Takes the next item for good, waiting for one when none is deliverable.",
        input: "queue",
        example: r#"{"queue":"jobs"}"# => r#"{"key":"jobs/00000000000000000042","value":"a"}"#,
    }
    "reserve" writes waits {
        summary: "Takes the next item until acked, nacked, timed out or the caller's lease ends; waits for one.",
        input: "queue; visibility_ms (default 30000) or until_lease_ends: true",
        example: r#"{"queue":"jobs","visibility_ms":30000}"# => r#"{"key":"jobs/...42","value":"a","token":57,"deliveries":1,"visible_at_ms":...}"#,
    }
    "ack" writes {
        summary: "Deletes a reserved item for good, while the reservation `token` is still the caller's.",
        input: "queue, token",
        example: r#"{"queue":"jobs","token":57}"# => r#"{"acked":"jobs/...42"}"#,
    }
    "nack" writes {
        summary: "Hands a reserved item back for redelivery, optionally after a delay.",
        input: "queue, token; delay_ms (optional)",
        example: r#"{"queue":"jobs","token":57}"# => r#"{"nacked":"jobs/...42","visible_at_ms":...}"#,
    }
    "peek" reads {
        summary: "Answers the item `pop` would take now, or null.",
        input: "queue",
        example: r#"{"queue":"jobs"}"# => r#"{"key":"jobs/...42","value":"a"}"#,
    }
    "length" reads {
        summary: "Counts ready, delayed and reserved items.",
        input: "queue",
        example: r#"{"queue":"jobs"}"# => r#"{"ready":3,"delayed":1,"reserved":2}"#,
    }
}

impl Module for Queue {
    fn invoke(function: &str, input: &[u8]) -> Result<Reply, String> {
        let named = || from_json::<Named>(input).and_then(|n| Layout::new(n.queue));
        match function {
            "push" => push(from_json(input)?),
            "pop" => pop(&named()?),
            "reserve" => reserve(from_json(input)?),
            "ack" => ack(from_json(input)?),
            "nack" => nack(from_json(input)?),
            "peek" => peek(&named()?),
            "length" => length(&named()?),
            other => Err(format!(
                "queue: unknown function {other:?} (try push, pop, reserve, ack, nack, peek)"
            )),
        }
    }

    /// A `pop` or `reserve` that waited wrote nothing of its own (a run's redeliveries stand:
    /// they were due anyway), so there is nothing to withdraw; see the module doc for one that
    /// was granted as its client left.
    fn abandon(_function: &str, _input: &[u8]) -> Result<(), String> {
        Ok(())
    }
}

baton_sdk::module!(Queue);

#[cfg(test)]
mod tests;
