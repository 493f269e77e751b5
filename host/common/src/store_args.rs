//! The argument rules of every store call, shared by both backends (this
//! crate's memory store and the gateway's Redis store), so a call is refused
//! the same way, with the same words, whichever one serves it; and by the
//! SDK, which gives plugins the limits.

/// Longest key, in bytes, namespace included.
pub const MAX_KEY_BYTES: usize = 512;
/// Largest value, in bytes (1 MiB).
pub const MAX_VALUE_BYTES: usize = 1024 * 1024;
/// Longest `ttl_ms` (30 days).
pub const MAX_TTL_MS: u64 = 30 * 24 * 60 * 60 * 1000;
/// Longest `hit` window (1 day).
pub const MAX_WINDOW_MS: u64 = 24 * 60 * 60 * 1000;
/// The largest capacity a bucket's double holds exactly (and cost with it).
pub const MAX_CAPACITY: u64 = 1 << 53;

pub fn key(key: &str) -> Result<(), String> {
    if key.len() > MAX_KEY_BYTES {
        return Err(format!("key is {} bytes; at most {MAX_KEY_BYTES} are allowed", key.len()));
    }
    Ok(())
}

pub fn value(value: &[u8]) -> Result<(), String> {
    if value.len() > MAX_VALUE_BYTES {
        return Err(format!("value is {} bytes; at most {MAX_VALUE_BYTES} are allowed", value.len()));
    }
    Ok(())
}

pub fn ttl(ttl_ms: Option<u64>) -> Result<(), String> {
    match ttl_ms {
        Some(ttl) if !(1..=MAX_TTL_MS).contains(&ttl) => {
            Err(format!("ttl_ms is {ttl}; it must be 1..={MAX_TTL_MS} (30 days), or none"))
        }
        _ => Ok(()),
    }
}

/// The arguments of a token-bucket `take`.
pub fn take(capacity: u64, refill_per_second: f64, cost: u64) -> Result<(), String> {
    if !(1..=MAX_CAPACITY).contains(&capacity) {
        return Err(format!("capacity is {capacity}; it must be 1..={MAX_CAPACITY}"));
    }
    if !(refill_per_second.is_finite() && refill_per_second > 0.0) {
        return Err(format!("refill_per_second is {refill_per_second}; it must be finite and above 0"));
    }
    if cost > capacity {
        return Err(format!("cost {cost} is over capacity {capacity}; such a take could never succeed"));
    }
    Ok(())
}

/// The arguments of a sliding-window `hit`.
pub fn hit(limit: u64, window_ms: u64, cost: u64) -> Result<(), String> {
    if limit == 0 {
        return Err("limit is 0; it must be at least 1".into());
    }
    if !(1..=MAX_WINDOW_MS).contains(&window_ms) {
        return Err(format!("window_ms is {window_ms}; it must be 1..={MAX_WINDOW_MS} (1 day)"));
    }
    if cost > limit {
        return Err(format!("cost {cost} is over limit {limit}; such a hit could never succeed"));
    }
    Ok(())
}
