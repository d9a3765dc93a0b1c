//! The replay guard's longest stall: the slowest single insert into the
//! nonce set while it fills to millions of keys (a busy node's minute or
//! two), against the same keys in one unsharded hash set with the same
//! hasher (the set as it was before the split) as the baseline of the same
//! run.
//!
//! A hash set grows by rehashing all its entries at once; the guard does it
//! under its lock, so every call waits for the slowest insert. The figure is
//! the ratio of the two worst inserts (and each one's milliseconds, for
//! scale). Timed per insert with `Instant` (about 20 ns of its own).
//!
//! Run: cargo bench --bench nonce_growth   (4 million keys, about 5 s);
//! under `cargo test` it runs 50,000 keys, to check that it works.

use mqgate::replay::nonces::{Keys, NonceSet};
use std::time::{Duration, Instant};

// mqgate's allocator, so that a set's growth costs what it costs there.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `n` keys spread like keyed hashes (a 128-bit LCG, its high bits folded
/// into the low ones).
fn keys(n: usize) -> Vec<u128> {
    let mut x: u128 = 0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835;
    (0..n)
        .map(|_| {
            x = x
                .wrapping_mul(0x2360_ed05_1fc6_5da4_4385_df64_9fcc_f645)
                .wrapping_add(0x5851_f42d_4c95_7f2d_1405_7b7e_f767_814f);
            x ^ (x >> 67)
        })
        .collect()
}

/// The slowest of `keys.len()` calls of `insert`, and their total.
fn worst(keys: &[u128], mut insert: impl FnMut(u128)) -> (Duration, Duration) {
    let started = Instant::now();
    let mut worst = Duration::ZERO;
    for &key in keys {
        let t = Instant::now();
        insert(key);
        worst = worst.max(t.elapsed());
    }
    (worst, started.elapsed())
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let n = if full { 4_000_000 } else { 50_000 };
    let keys = keys(n);
    let forget_after = 1_000;
    let mut rounds = Vec::new();
    for _ in 0..3 {
        let mut sharded = NonceSet::new(600, n);
        let (worst_sharded, total_sharded) = worst(&keys, |k| {
            sharded.insert(k, forget_after).expect("room for every key")
        });
        assert_eq!(sharded.len(), n);
        // The baseline: one set with the nonce set's own hasher.
        let mut one = Keys::default();
        let (worst_one, total_one) = worst(&keys, |k| {
            one.insert(k);
        });
        assert_eq!(one.len(), n);
        rounds.push((worst_sharded, worst_one, total_sharded, total_one));
    }
    // The median round by the ratio of the worst inserts.
    rounds.sort_by(|a, b| {
        let r =
            |x: &(Duration, Duration, Duration, Duration)| x.0.as_secs_f64() / x.1.as_secs_f64();
        r(a).total_cmp(&r(b))
    });
    let (ws, wo, ts, to) = rounds[1];
    println!(
        "nonce set, {n} keys, median of 3 rounds: worst insert {:.3} ms sharded against {:.3} ms in one set ({:.3} of it); all inserts {:.0} ms against {:.0} ms ({:.2})",
        ws.as_secs_f64() * 1e3,
        wo.as_secs_f64() * 1e3,
        ws.as_secs_f64() / wo.as_secs_f64(),
        ts.as_secs_f64() * 1e3,
        to.as_secs_f64() * 1e3,
        ts.as_secs_f64() / to.as_secs_f64()
    );
}
