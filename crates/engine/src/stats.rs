//! Counters the engine keeps for `/metrics`. Relaxed atomics: they are read for
//! reporting only and never order anything.

use std::sync::atomic::AtomicU64;

#[derive(Debug, Default)]
pub struct EngineStats {
    /// Ticks accepted by [`crate::Engine::publish`].
    pub ticks_in: AtomicU64,
    /// Frames handed to subscribers' outboxes.
    pub deliveries: AtomicU64,
    /// Pending ticks dropped by conflation (backpressure and max_hz).
    pub conflated: AtomicU64,
    /// Ticks replayed by recovery.
    pub replayed: AtomicU64,
    /// Topics that went stale.
    pub stale_events: AtomicU64,
    /// Ticks from other nodes delivered here.
    pub remote_applied: AtomicU64,
    /// Ticks from other nodes already seen.
    pub remote_duplicates: AtomicU64,
    /// Ticks of another node's epoch that never arrived.
    pub remote_gaps: AtomicU64,
    /// Times two nodes published the same topic at once.
    pub epoch_conflicts: AtomicU64,
}
