//! Deterministic bytes for tests and benchmarks. Every crate's tests and the benches
//! write data and compare what they read back; they share one generator so that a
//! pattern named by its seed means the same bytes everywhere.

/// Incompressible-looking bytes for `(seed, len)` (xorshift64, low byte of each step).
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}
