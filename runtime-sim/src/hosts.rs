//! Several simulated hosts on one virtual clock (`--hosts H`): each host is a [`World`] (one
//! core, its own staging area and crash semantics, its own latencies and faults) and they share
//! the metadata store, the object store and the Redis stand-in ([`MemRedis`]), which are moved
//! into a host for the duration of each call into it.
//!
//! The cluster's event loop picks the earliest of: a heartbeat tick (every live host renews its
//! key, as coord.rs's heartbeat thread does each second), a host restarting after a crash, a
//! published change reaching a subscriber, and the next completion or timer of a host. Ties go
//! in that order, then by host index. A committed transaction's changes are published when the
//! metadata store executes it and reach each other host that is up after a delay drawn from the
//! seed, in publication order per subscriber (one Redis connection delivers in order); a host
//! that is down misses them (its restarted core starts with an empty cache anyway).
//!
//! Faults of the cluster (drawn by the multi-host harness): a host crashes and stays down for a
//! while; its heartbeat stops, so its locks expire 5 s after its last renewal; a host's lease is
//! lost (its renewals fail for a while, so other hosts' scripts delete its locks while it still
//! believes it holds them); a message is delayed by up to seconds; a host's subscription is cut
//! for a while (Redis pub/sub keeps nothing for a disconnected subscriber: the messages on their
//! way to it and every one published meanwhile are lost), then it subscribes again and resyncs
//! (`Core::invalidate_all`, as `runtime-smol`'s subscriber does after a reconnection); virtual
//! time jumps ahead (everyone paused: overdue completions and timers then run late).

use crate::meta::MemMeta;
use crate::objects::MemObjects;
use crate::redis::{HostId, MemRedis, HEARTBEAT_EVERY};

/// How often (in heartbeats) a host looks for dead hosts' orphans (coord.rs).
const ORPHAN_CHECK_EVERY: u32 = 5;
use crate::rng::Rng;
use crate::sim::{LoopResult, World};
use crate::trace::Trace;
use std::collections::BTreeMap;
use std::time::Duration;
use truckeefs_core::{Changes, Ctx, Op, Reply, RequestId};

pub struct Host {
    pub w: World,
    /// Crashed and not yet restarted: nothing runs, nothing is delivered, no heartbeat.
    pub down_until: Option<Duration>,
    /// The heartbeat renewals fail until then (a lost lease).
    pub lease_lost_until: Option<Duration>,
    /// Its subscription is cut until then: messages to it are lost; then it resubscribes.
    pub unsubscribed_until: Option<Duration>,
    /// Bumped by every crash: messages for an earlier incarnation are dropped.
    pub incarnation: u64,
    /// Heartbeats since the process started (every fifth looks for dead hosts' orphans).
    pub beats: u32,
}

struct Message {
    to: usize,
    incarnation: u64,
    changes: Changes,
}

/// Published messages and other coordination (statistics).
#[derive(Clone, Copy, Debug, Default)]
pub struct MessageStats {
    pub published: u64,
    pub delivered: u64,
    /// Delivered late (a delayed-invalidation fault).
    pub delayed: u64,
    /// Sent to a host that was down, or had restarted before delivery.
    pub missed: u64,
    /// Lost with a cut subscription.
    pub lost: u64,
    /// Resynchronizations after a cut subscription.
    pub resyncs: u64,
    /// Collections of dead hosts' orphans (a host found a dead host's orphan set).
    pub collections: u64,
}

pub struct Cluster {
    pub hosts: Vec<Host>,
    pub now: Duration,
    pub meta: MemMeta,
    pub objects: MemObjects,
    pub redis: MemRedis,
    pub trace: Trace,
    messages: BTreeMap<(Duration, u64), Message>,
    /// The last delivery time scheduled per subscriber (delivery is in order).
    last_delivery: BTreeMap<usize, Duration>,
    seq: u64,
    next_beat: Duration,
    msg_rng: Rng,
    /// Chance that a message is delayed by 0.2 to 3 s.
    pub delay_chance: f64,
    next_host_id: HostId,
    /// Per Redis host id: the intervals its heartbeat key did not exist while the host ran.
    lapses: BTreeMap<HostId, Vec<(Duration, Duration)>>,
    pub stats: MessageStats,
    /// The host whose events the trace shows last (a note marks every switch).
    traced_host: usize,
}

/// What the next step of the cluster is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Next {
    Beat,
    Restart(usize),
    Resubscribe(usize),
    Deliver,
    Host(usize),
}

impl Cluster {
    /// `worlds` are the hosts, each with placeholder stores: the shared ones are moved in for
    /// every call.
    pub fn new(worlds: Vec<World>, meta: MemMeta, objects: MemObjects, trace: Trace, msg_rng: Rng) -> Cluster {
        let mut c = Cluster {
            hosts: Vec::new(),
            now: Duration::ZERO,
            meta,
            objects,
            redis: MemRedis::new(),
            trace,
            messages: BTreeMap::new(),
            last_delivery: BTreeMap::new(),
            seq: 0,
            next_beat: HEARTBEAT_EVERY,
            msg_rng,
            delay_chance: 0.0,
            next_host_id: 1,
            lapses: BTreeMap::new(),
            stats: MessageStats::default(),
            traced_host: 0,
        };
        for mut w in worlds {
            w.host_id = c.next_host_id;
            c.redis.renew(w.host_id, Duration::ZERO);
            c.next_host_id += 1;
            c.hosts.push(Host { w, down_until: None, lease_lost_until: None, unsubscribed_until: None, incarnation: 0, beats: 0 });
        }
        c
    }

    pub fn is_up(&self, h: usize) -> bool {
        self.hosts[h].down_until.is_none()
    }

    /// Host `h` is up and receives what is published.
    pub fn is_subscribed(&self, h: usize) -> bool {
        self.is_up(h) && self.hosts[h].unsubscribed_until.is_none()
    }

    fn enter(&mut self, h: usize) {
        let now = self.now;
        if self.traced_host != h {
            self.traced_host = h;
            self.trace.note(now.as_micros() as u64, format!("-- host {h}"));
        }
        let w = &mut self.hosts[h].w;
        std::mem::swap(&mut w.meta, &mut self.meta);
        std::mem::swap(&mut w.objects, &mut self.objects);
        std::mem::swap(&mut w.trace, &mut self.trace);
        w.redis = Some(std::mem::take(&mut self.redis));
        if w.now < now {
            w.now = now;
        }
    }

    fn leave(&mut self, h: usize) {
        let w = &mut self.hosts[h].w;
        std::mem::swap(&mut w.meta, &mut self.meta);
        std::mem::swap(&mut w.objects, &mut self.objects);
        std::mem::swap(&mut w.trace, &mut self.trace);
        self.redis = w.redis.take().expect("moved in by enter");
        if w.now > self.now {
            self.now = w.now;
        }
        let published = std::mem::take(&mut self.hosts[h].w.published);
        for changes in published {
            self.publish(h, changes);
        }
    }

    /// Call `f` on host `h` with the shared stores in place.
    pub fn with<T>(&mut self, h: usize, f: impl FnOnce(&mut World) -> T) -> T {
        self.enter(h);
        let r = f(&mut self.hosts[h].w);
        self.leave(h);
        r
    }

    fn publish(&mut self, from: usize, changes: Changes) {
        self.stats.published += 1;
        for to in 0..self.hosts.len() {
            if to == from || !self.is_up(to) {
                if to != from {
                    self.stats.missed += 1;
                }
                continue;
            }
            if !self.is_subscribed(to) {
                self.stats.lost += 1;
                continue;
            }
            let delayed = self.delay_chance > 0.0 && self.msg_rng.chance(self.delay_chance);
            let lat = if delayed {
                self.stats.delayed += 1;
                Duration::from_millis(self.msg_rng.range(200, 3000))
            } else {
                Duration::from_micros(self.msg_rng.range(100, 5000))
            };
            let at = (self.now + lat).max(self.last_delivery.get(&to).copied().unwrap_or_default());
            self.last_delivery.insert(to, at);
            self.seq += 1;
            let incarnation = self.hosts[to].incarnation;
            self.messages.insert((at, self.seq), Message { to, incarnation, changes: changes.clone() });
        }
    }

    /// Send a kernel request to host `h`.
    pub fn issue(&mut self, h: usize, ctx: Ctx, op: Op) -> LoopResult<RequestId> {
        assert!(self.is_up(h), "a request to host {h}, which is down");
        self.with(h, |w| w.issue(ctx, op))
    }

    pub fn forget(&mut self, h: usize, ino: u64, n: u64) -> LoopResult<()> {
        self.with(h, |w| w.forget(ino, n))
    }

    pub fn take_reply(&mut self, h: usize, id: RequestId) -> Option<Result<Reply, i32>> {
        self.hosts[h].w.take_reply(id)
    }

    /// The next event; heartbeats count on their own only up to `beats_until`.
    fn next(&self, beats_until: Option<Duration>) -> Option<(Duration, Next)> {
        let mut best: Option<(Duration, Next)> = None;
        let mut offer = |t: Duration, n: Next| {
            if best.is_none_or(|b| (t, n) < b) {
                best = Some((t, n));
            }
        };
        for (i, h) in self.hosts.iter().enumerate() {
            match h.down_until {
                Some(t) => offer(t, Next::Restart(i)),
                None => {
                    if let Some(t) = h.w.next_time() {
                        offer(t.max(self.now), Next::Host(i));
                    }
                    if let Some(t) = h.unsubscribed_until {
                        offer(t.max(self.now), Next::Resubscribe(i));
                    }
                }
            }
        }
        if let Some(((t, _), _)) = self.messages.first_key_value() {
            offer(*t, Next::Deliver);
        }
        // Heartbeats only while something else is pending: they never end a wait by themselves.
        let beat = Some((self.next_beat.max(self.now), Next::Beat));
        let Some(next) = best else {
            return beat.filter(|_| beats_until.is_some_and(|t| self.next_beat <= t));
        };
        if self.next_beat <= next.0 {
            return Some((self.next_beat.max(self.now), Next::Beat));
        }
        Some(next)
    }

    /// Run the next event. False when nothing but heartbeats is pending.
    pub fn step(&mut self) -> LoopResult<bool> {
        self.step_until(None)
    }

    fn step_until(&mut self, beats_until: Option<Duration>) -> LoopResult<bool> {
        let Some((t, next)) = self.next(beats_until) else {
            return Ok(false);
        };
        if t > self.now {
            self.now = t;
        }
        match next {
            Next::Beat => self.beat()?,
            Next::Restart(h) => self.restart(h)?,
            Next::Resubscribe(h) => {
                self.hosts[h].unsubscribed_until = None;
                self.stats.resyncs += 1;
                self.with(h, |w| w.resync())?;
            }
            Next::Deliver => {
                let (_, m) = self.messages.pop_first().expect("offered by next");
                if self.is_up(m.to) && self.hosts[m.to].incarnation == m.incarnation {
                    self.stats.delivered += 1;
                    self.with(m.to, |w| w.invalidate(m.changes))?;
                } else {
                    self.stats.missed += 1;
                }
            }
            Next::Host(h) => {
                self.with(h, |w| w.step())?;
            }
        }
        Ok(true)
    }

    /// Every host that is up renews its heartbeat key, except those whose lease is lost; every
    /// fifth heartbeat of a host it looks for dead hosts' orphan sets first, and collects their
    /// orphans if there are any (coord.rs's heartbeat thread).
    fn beat(&mut self) -> LoopResult<()> {
        let now = self.now;
        for h in 0..self.hosts.len() {
            let host = &mut self.hosts[h];
            if host.lease_lost_until.is_some_and(|t| t <= now) {
                host.lease_lost_until = None;
            }
            if host.down_until.is_some() {
                continue;
            }
            host.beats += 1;
            if host.beats.is_multiple_of(ORPHAN_CHECK_EVERY) {
                let me = host.w.host_id;
                if !self.redis.orphans(me, now).dead_sets.is_empty() {
                    self.stats.collections += 1;
                    self.with(h, |w| w.collect_orphans())?;
                }
            }
            let host = &mut self.hosts[h];
            if host.lease_lost_until.is_some() {
                continue;
            }
            let id = host.w.host_id;
            if let Some(expired) = self.redis.expiry(id).filter(|&e| e <= now) {
                self.lapses.entry(id).or_default().push((expired, now));
                self.redis.relist_opens(id);
            }
            self.redis.renew(id, now);
        }
        self.next_beat = now + HEARTBEAT_EVERY;
        Ok(())
    }

    /// Whether the heartbeat of Redis host `id` was missing at any time in `[from, to]`. A lapse
    /// `(s, e)` ended with the renewal at `e`; one ending at `from` counts (what ran in that
    /// instant before the renewal, another host's collection of orphans say, saw it missing).
    pub fn lapsed_between(&self, id: HostId, from: Duration, to: Duration) -> bool {
        let past = self.lapses.get(&id).is_some_and(|ls| ls.iter().any(|&(s, e)| s <= to && e >= from));
        let now = self.redis.expiry(id).is_none_or(|e| e <= to);
        past || now
    }

    /// Host `h`'s mount process dies; it restarts `down_for` later with a new Redis host id.
    /// `lose_staging`: its staging area is lost too (the machine is replaced).
    pub fn crash(&mut self, h: usize, down_for: Duration, lose_staging: bool) -> LoopResult<()> {
        self.with(h, |w| w.crash(lose_staging));
        let host = &mut self.hosts[h];
        host.incarnation += 1;
        host.lease_lost_until = None;
        // The new process subscribes before it caches anything.
        host.unsubscribed_until = None;
        host.down_until = Some(self.now + down_for);
        let now = self.now.as_micros() as u64;
        self.trace.note(now, format!("host {h} down until {:?}", self.now + down_for));
        Ok(())
    }

    fn restart(&mut self, h: usize) -> LoopResult<()> {
        let id = self.next_host_id;
        self.next_host_id += 1;
        let host = &mut self.hosts[h];
        host.down_until = None;
        host.beats = 0;
        host.w.host_id = id;
        self.redis.renew(id, self.now);
        let now = self.now.as_micros() as u64;
        self.trace.note(now, format!("host {h} up again as redis host {id}"));
        // The new process's core starts (journal replay, orphans no live host holds).
        self.with(h, |w| w.start_again())
    }

    /// Host `h`'s heartbeat renewals fail for `d`.
    pub fn lose_lease(&mut self, h: usize, d: Duration) {
        let now = self.now.as_micros() as u64;
        self.trace.note(now, format!("host {h}: heartbeat renewals fail for {d:?}"));
        self.hosts[h].lease_lost_until = Some(self.now + d);
    }

    /// Host `h`'s subscription is cut for `d`: what is on its way to it is lost, and so is
    /// everything published until it subscribes again.
    pub fn cut_subscription(&mut self, h: usize, d: Duration) {
        let now = self.now.as_micros() as u64;
        self.trace.note(now, format!("host {h}: subscription cut for {d:?}"));
        let before = self.messages.len();
        self.messages.retain(|_, m| m.to != h);
        self.stats.lost += (before - self.messages.len()) as u64;
        self.hosts[h].unsubscribed_until = Some(self.now + d);
    }

    /// Whether every message was delivered and every host that is up is subscribed.
    pub fn all_heard(&self) -> bool {
        self.messages.is_empty() && (0..self.hosts.len()).all(|h| !self.is_up(h) || self.is_subscribed(h))
    }

    /// Everyone pauses; virtual time jumps `d` ahead.
    pub fn jump(&mut self, d: Duration) {
        let now = self.now.as_micros() as u64;
        self.trace.note(now, format!("time jumps {d:?} ahead"));
        self.now += d;
    }

    /// Messages not yet delivered.
    pub fn messages_in_flight(&self) -> usize {
        self.messages.len()
    }

    /// Let `d` of virtual time pass, running whatever happens meanwhile.
    pub fn advance(&mut self, d: Duration) -> LoopResult<()> {
        let target = self.now + d;
        while let Some((t, _)) = self.next(Some(target)) {
            if t > target {
                break;
            }
            self.step_until(Some(target))?;
        }
        if target > self.now {
            self.now = target;
        }
        Ok(())
    }
}
