//! Golden hashes produced by Go 1.19.8's `sort.Sort` (the toolchain etcd 3.4.23 in Debian
//! bookworm was built with) on the same inputs: elements (value, original index) compared by
//! value only, so the hash of the resulting index order pins down how ties were broken.
//! The Go side: the same LCG and patterns as [`input`], `sort.Sort(byV(data))` or
//! `sort.Sort(sort.Reverse(byV(data)))`, then FNV-1a 64 over each index as 4 LE bytes.

use super::go_sort;

/// (length, input pattern, descending, FNV-1a hash of the sorted index order).
const GOLDEN: &[(usize, u32, bool, u64)] = &[
    (5, 0, false, 0x5b4502464dd14731),
    (5, 0, true, 0x352736e97f9895f1),
    (5, 1, false, 0xeb29754b740c25f1),
    (5, 1, true, 0x73bfceb76fb1f201),
    (5, 2, false, 0xc3ff582c006268f1),
    (5, 2, true, 0xeb29754b740c25f1),
    (5, 3, false, 0xeb29754b740c25f1),
    (5, 3, true, 0xeb29754b740c25f1),
    (5, 4, false, 0xeb29754b740c25f1),
    (5, 4, true, 0xe944e104fcd516f1),
    (5, 5, false, 0xe774d3be2b5f7371),
    (5, 5, true, 0x3f3d98e57b8bc241),
    (13, 0, false, 0x6567e5b1a752a929),
    (13, 0, true, 0xc462daec7862f949),
    (13, 1, false, 0xe6fecf7c5a675f79),
    (13, 1, true, 0x6a847da4a41cd099),
    (13, 2, false, 0x0a95e897b6b147e9),
    (13, 2, true, 0xe6fecf7c5a675f79),
    (13, 3, false, 0xe6fecf7c5a675f79),
    (13, 3, true, 0xe6fecf7c5a675f79),
    (13, 4, false, 0x87fbac5606f369f9),
    (13, 4, true, 0x44d4369ce3838659),
    (13, 5, false, 0xef21a5917f406239),
    (13, 5, true, 0x12419d829340ccd9),
    (20, 0, false, 0x96b3033197a40545),
    (20, 0, true, 0x31fe905ee8526805),
    (20, 1, false, 0x180afee825580385),
    (20, 1, true, 0xaffb085caae94b55),
    (20, 2, false, 0xa249db07783671d5),
    (20, 2, true, 0x180afee825580385),
    (20, 3, false, 0x180afee825580385),
    (20, 3, true, 0x180afee825580385),
    (20, 4, false, 0x7df0321ac7d790c5),
    (20, 4, true, 0x36a0fa39818c7f15),
    (20, 5, false, 0x3a83280fd0de8755),
    (20, 5, true, 0x9fa614dfba5e6075),
    (49, 0, false, 0x53c39bd1e183a105),
    (49, 0, true, 0x39efdeabe0afe815),
    (49, 1, false, 0x93ecda67f78a4865),
    (49, 1, true, 0xa9de31efed09bac5),
    (49, 2, false, 0x99ec32a9050a5b55),
    (49, 2, true, 0x93ecda67f78a4865),
    (49, 3, false, 0x93ecda67f78a4865),
    (49, 3, true, 0x93ecda67f78a4865),
    (49, 4, false, 0xea513cb660e0ccb5),
    (49, 4, true, 0xc9fb8b6c4d3be765),
    (49, 5, false, 0xaaabc0f83d3ce5f5),
    (49, 5, true, 0x46603d63504192f5),
    (50, 0, false, 0xf867f71a99943194),
    (50, 0, true, 0x552a9cd5926ae8f4),
    (50, 1, false, 0x512d7539f3d4a794),
    (50, 1, true, 0x51f1bf9bf5f23bc4),
    (50, 2, false, 0x011d6b7784c78e34),
    (50, 2, true, 0x512d7539f3d4a794),
    (50, 3, false, 0x512d7539f3d4a794),
    (50, 3, true, 0x512d7539f3d4a794),
    (50, 4, false, 0x4058681ce57bb734),
    (50, 4, true, 0xee1d158f750d4d94),
    (50, 5, false, 0x87892a940a8893b4),
    (50, 5, true, 0x480033819a026744),
    (64, 0, false, 0x42b006a6f4f5c295),
    (64, 0, true, 0x1f2e1b0de8f495b5),
    (64, 1, false, 0xf5f45328a8ebdb25),
    (64, 1, true, 0x137a8119c35c2dd5),
    (64, 2, false, 0x81ad0e9a2874f585),
    (64, 2, true, 0xf5f45328a8ebdb25),
    (64, 3, false, 0xf5f45328a8ebdb25),
    (64, 3, true, 0xf5f45328a8ebdb25),
    (64, 4, false, 0xae38946a5b22fb05),
    (64, 4, true, 0xaa158f71c8d0a1c5),
    (64, 5, false, 0xf4d019c44e504785),
    (64, 5, true, 0x91ede72ee2b17625),
    (100, 0, false, 0x378b0d41d6ec2c15),
    (100, 0, true, 0xb3434c3b1ec07d35),
    (100, 1, false, 0x3cea9f2d76102aa5),
    (100, 1, true, 0x0ca8a6e03b792635),
    (100, 2, false, 0x5031cc6a49076025),
    (100, 2, true, 0x3cea9f2d76102aa5),
    (100, 3, false, 0x3cea9f2d76102aa5),
    (100, 3, true, 0x3cea9f2d76102aa5),
    (100, 4, false, 0x81e5503599224115),
    (100, 4, true, 0x1dd9f42d899e5f55),
    (100, 5, false, 0x3e38fe61aae64235),
    (100, 5, true, 0x5aad8dd734ad4a75),
    (257, 0, false, 0x11eff03da7af891e),
    (257, 0, true, 0xc49500b2778c7cea),
    (257, 1, false, 0x9be0fc48457b614a),
    (257, 1, true, 0xd37fcadf7290c62a),
    (257, 2, false, 0x8af430976c9b650a),
    (257, 2, true, 0x9be0fc48457b614a),
    (257, 3, false, 0x9be0fc48457b614a),
    (257, 3, true, 0x9be0fc48457b614a),
    (257, 4, false, 0x215a6345cb6fc78a),
    (257, 4, true, 0x0358e39dd48b1172),
    (257, 5, false, 0xa25e81088d8173ce),
    (257, 5, true, 0x99c4d5b2a1b0eefa),
    (1000, 0, false, 0x1a887410cbf9ac85),
    (1000, 0, true, 0xf12e2836d21e3d49),
    (1000, 1, false, 0xb626031ca980b5d5),
    (1000, 1, true, 0x0eac9d0e796f7e59),
    (1000, 2, false, 0x05bc7e83be847715),
    (1000, 2, true, 0xb626031ca980b5d5),
    (1000, 3, false, 0xb626031ca980b5d5),
    (1000, 3, true, 0xb626031ca980b5d5),
    (1000, 4, false, 0x37f242b18aeed669),
    (1000, 4, true, 0xd6f5d61c0d55fde1),
    (1000, 5, false, 0x8a575c851e63ebe9),
    (1000, 5, true, 0xf459f774a70027a5),
];

const VALUE_MODULUS: u64 = 5;

/// Deterministic inputs with many ties, in several shapes that steer pdqsort down its
/// different paths (partial insertion sort, equal partitioning, pattern breaking).
fn input(n: usize, pattern: u32, seed: u64) -> Vec<(u64, u64)> {
    let mut x = seed;
    (0..n)
        .map(|i| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let i64_ = i as u64;
            let n64 = n as u64;
            let v = match pattern {
                0 => (x >> 33) % VALUE_MODULUS,
                1 => i64_ / 3,
                2 => (n64 - i64_) / 2,
                3 => 7,
                4 => i64_ % 7,
                _ if i < n / 2 => i64_,
                _ => n64 - i64_,
            };
            (v, i64_)
        })
        .collect()
}

fn fnv(order: &[(u64, u64)]) -> u64 {
    let mut h: u64 = 14695981039346656037;
    for (_, idx) in order {
        for b in (*idx as u32).to_le_bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(1099511628211);
        }
    }
    h
}

#[test]
fn tie_order_matches_go_sort() {
    for &(n, pattern, descending, expected) in GOLDEN {
        let mut data = input(n, pattern, (n as u64) * 10 + u64::from(pattern));
        if descending {
            go_sort(&mut data, |a, b| b.0 < a.0);
        } else {
            go_sort(&mut data, |a, b| a.0 < b.0);
        }
        assert!(data.windows(2).all(|w| if descending {
            w[0].0 >= w[1].0
        } else {
            w[0].0 <= w[1].0
        }));
        assert_eq!(
            fnv(&data),
            expected,
            "n {n} pattern {pattern} descending {descending}"
        );
    }
}
