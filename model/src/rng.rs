//! Seeded, repeatable numbers: splitmix64's mix. The simulated payment
//! provider, the storm's workload and the drills' jitter all draw from it, so
//! a seed replays a run; no randomness crate is needed.

/// The golden-ratio increment of splitmix64.
pub const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// splitmix64's finaliser: every bit of `z` stirred into every bit out.
pub const fn finalize(z: u64) -> u64 {
    let z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    let z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The next number of the sequence after `state`.
pub const fn next(state: u64) -> u64 {
    finalize(state.wrapping_add(GOLDEN))
}

/// A number in [0, 1) from the top 53 bits of `bits`.
pub fn unit(bits: u64) -> f64 {
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

/// A number fixed by (seed, number, purpose): the `number`th draw for
/// `purpose` in a run seeded with `seed`.
pub const fn mix(seed: u64, number: u64, purpose: u64) -> u64 {
    finalize(seed ^ number.wrapping_mul(0xD1B5_4A32_D192_ED03) ^ purpose.wrapping_mul(GOLDEN))
}

/// [`mix`] as a number in [0, 1).
pub fn draw(seed: u64, number: u64, purpose: u64) -> f64 {
    unit(mix(seed, number, purpose))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sequence_is_splitmix64() {
        // The first outputs of the reference splitmix64 seeded with 0.
        let mut state = 0u64;
        let mut out = Vec::new();
        for _ in 0..3 {
            out.push(next(state));
            state = state.wrapping_add(GOLDEN);
        }
        assert_eq!(
            out,
            [
                0xE220_A839_7B1D_CDAF,
                0x6E78_9E6A_A1B9_65F4,
                0x06C4_5D18_8009_454F
            ]
        );
    }

    #[test]
    fn units_spread_over_zero_to_one() {
        let draws: Vec<f64> = (0..10_000u64).map(|i| unit(next(i))).collect();
        assert!(draws.iter().all(|u| (0.0..1.0).contains(u)));
        let below_half = draws.iter().filter(|&&u| u < 0.5).count();
        assert!((4_800..5_200).contains(&below_half), "{below_half}");
        assert!(unit(u64::MAX) < 1.0);
    }
}
