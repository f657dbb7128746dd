//! The result cache's index (issue 16) at a million entries: how many
//! lookups per second the coordinator's index answers (hits and misses, each
//! under the mutex the lookup route takes, copying what the route copies,
//! hits counted), what claims cost (two unrelated established hosts per
//! entry), and the memory one entry takes (counted by the allocator: the
//! entry, its key, its hosts and the map's share).
//!
//! Run: `cargo bench --bench cache_index` (about half a minute once built).
//!
//! Measured on the 2-core build machine (shared with two other builds):
//! 358 000 lookups/s on hits (the route's copy and the hit count included),
//! 1 630 000/s on misses, 1 190 000 claims/s, 318 bytes per entry (303 MiB
//! for a million), a million stored entries loaded in 1.2 s.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use dportage::coordinator::cache_index::{CacheIndex, Claim, EntryRow, HostFacts};
use dportage::network::selection::NetKey;
use dportage::network::Identity;
use dportage::trust::cache_entry::CacheKey;
use dportage::trust::standing::Standing;

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new as isize - l.size() as isize, Ordering::Relaxed);
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

const ENTRIES: usize = 1_000_000;
const LOOKUPS: usize = 2_000_000;
const CLAIMED: usize = 200_000;

/// A well-spread key (what blake3 keys are).
fn key(i: u64, salt: u64) -> CacheKey {
    let mut h = blake3::Hasher::new();
    h.update(&i.to_le_bytes());
    h.update(&salt.to_le_bytes());
    CacheKey(*h.finalize().as_bytes())
}

fn main() {
    let hosts: Vec<_> = (0..64).map(|_| Identity::generate().id()).collect();
    let keys: Vec<CacheKey> = (0..ENTRIES as u64).map(|i| key(i, 1)).collect();
    let misses: Vec<CacheKey> = (0..ENTRIES as u64).map(|i| key(i, 2)).collect();

    let before = LIVE.load(Ordering::Relaxed);
    let t = Instant::now();
    let mut index = CacheIndex::default();
    for (i, k) in keys.iter().enumerate() {
        index.load(EntryRow {
            key: *k,
            toolchain: [(i % 4) as u8; 32],
            result: k.0,
            witnesses: vec![hosts[i % 64], hosts[(i + 1) % 64]],
            holders: vec![],
            made_at: 1_700_000_000,
            hits: 0,
            withdrawn: None,
        });
    }
    let build = t.elapsed();
    let bytes = LIVE.load(Ordering::Relaxed) - before;
    let index = Mutex::new(index);

    let lookups = |keys: &[CacheKey], hit: bool| -> f64 {
        let t = Instant::now();
        let mut found = 0usize;
        for i in 0..LOOKUPS {
            // A stride through the keys: no cache-friendly order.
            let k = &keys[(i * 7919) % keys.len()];
            let mut ix = index.lock().unwrap();
            let got = ix
                .get(k)
                .filter(|e| !e.is_withdrawn())
                .map(|e| (e.result, e.holders().to_vec(), e.made_at));
            if hit && got.is_some() {
                ix.record_hit(k);
            }
            drop(ix);
            found += usize::from(black_box(got).is_some());
        }
        assert_eq!(found, if hit { LOOKUPS } else { 0 });
        LOOKUPS as f64 / t.elapsed().as_secs_f64()
    };
    let hits = lookups(&keys, true);
    let miss = lookups(&misses, false);

    // Claims: each entry made by two unrelated established hosts.
    let mut claimed = CacheIndex::default();
    let fact = |i: usize| HostFacts {
        id: hosts[i % 64],
        owner: hosts[i % 64],
        network: NetKey::of(IpAddr::V4(Ipv4Addr::new(10, 0, (i % 64) as u8, 1))),
        standing: Standing::Established,
    };
    let t = Instant::now();
    for (i, k) in keys.iter().take(CLAIMED).enumerate() {
        let c = Claim {
            key: *k,
            toolchain: [1; 32],
            result: k.0,
        };
        black_box(claimed.claim(fact(i), c, 1_700_000_000));
        black_box(claimed.claim(fact(i + 1), c, 1_700_000_000));
    }
    let claims = (2 * CLAIMED) as f64 / t.elapsed().as_secs_f64();
    assert_eq!(claimed.stats().entries, CLAIMED);

    println!(
        "cache_index: {ENTRIES} entries (2 witnesses each), one thread, under the route's mutex"
    );
    println!("{:<34} {:>14}", "measure", "value");
    println!("{:<34} {:>14.0}", "lookups/s, hits (counted)", hits);
    println!("{:<34} {:>14.0}", "lookups/s, misses", miss);
    println!("{:<34} {:>14.0}", "claims/s (2 per entry made)", claims);
    println!(
        "{:<34} {:>14.0}",
        "bytes per entry (allocator)",
        bytes as f64 / ENTRIES as f64
    );
    println!(
        "{:<34} {:>14.1}",
        "MiB for all entries",
        bytes as f64 / (1 << 20) as f64
    );
    println!(
        "{:<34} {:>14.2}",
        "load of 1M entries (s)",
        build.as_secs_f64()
    );
}
