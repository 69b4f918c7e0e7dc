//! Sizes as users type and read them: `20G` on the command line, `20 GB` in tables. Both
//! sides are binary (1024-based), as in Sheepdog.

/// Multipliers for the suffixes `parse_size` accepts, in order.
const SUFFIXES: [(char, u32); 5] = [('K', 10), ('M', 20), ('G', 30), ('T', 40), ('P', 50)];

/// Units `format_size` prints; like Sheepdog's `size_to_str` it starts at MB.
const UNITS: [&str; 5] = ["MB", "GB", "TB", "PB", "EB"];

/// Parses a byte count: a decimal integer with an optional K, M, G, T or P suffix
/// (1024-based, any case, optionally followed by `B`: `20G`, `20gb`, `512M`, `4096`,
/// `4096B`). Fractions, signs, spaces and overflow are rejected with a message that
/// names the input.
pub fn parse_size(s: &str) -> Result<u64, String> {
    if s.is_empty() {
        return Err("empty size: give a number of bytes, e.g. 20G or 4096".into());
    }
    let digits_end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, suffix) = s.split_at(digits_end);
    let invalid = || {
        format!(
            "invalid size '{s}': use a whole number with an optional K, M, G, T or P suffix \
             (1024-based), e.g. 20G"
        )
    };
    if digits.is_empty() {
        return Err(invalid());
    }
    let mut chars = suffix.chars();
    let shift = match chars.next() {
        None => 0,
        Some('b' | 'B') if chars.as_str().is_empty() => 0,
        Some(c) => {
            let c = c.to_ascii_uppercase();
            let shift = SUFFIXES
                .iter()
                .find(|(s, _)| *s == c)
                .map(|&(_, shift)| shift)
                .ok_or_else(invalid)?;
            match chars.as_str() {
                "" | "b" | "B" => shift,
                _ => return Err(invalid()),
            }
        }
    };
    let too_large = || format!("size '{s}' is too large");
    let n: u64 = digits.parse().map_err(|_| too_large())?;
    n.checked_mul(1u64 << shift).ok_or_else(too_large)
}

/// Formats a byte count the way Sheepdog's `dog` does: in MB or the largest unit that
/// keeps the number under 1024, with one decimal below 10 (`0.0 MB`, `4.0 MB`, `20 GB`,
/// `1.5 TB`).
pub fn format_size(bytes: u64) -> String {
    let mut size = bytes as f64 / (1u64 << 20) as f64;
    let mut unit = 0;
    while unit < UNITS.len() - 1 && size >= 1024.0 {
        size /= 1024.0;
        unit += 1;
    }
    if size >= 10.0 {
        format!("{size:.0} {}", UNITS[unit])
    } else {
        format!("{size:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const K: u64 = 1024;
    const M: u64 = 1024 * K;
    const G: u64 = 1024 * M;
    const T: u64 = 1024 * G;
    const P: u64 = 1024 * T;

    #[test]
    fn parses_plain_and_suffixed_sizes() {
        let cases = [
            ("0", 0),
            ("4096", 4096),
            ("4096B", 4096),
            ("4096b", 4096),
            ("1K", K),
            ("1k", K),
            ("512M", 512 * M),
            ("20G", 20 * G),
            ("20g", 20 * G),
            ("20GB", 20 * G),
            ("20gb", 20 * G),
            ("1T", T),
            ("4P", 4 * P),
            ("16383P", 16383 * P),
            ("18446744073709551615", u64::MAX),
        ];
        for (s, want) in cases {
            assert_eq!(parse_size(s), Ok(want), "{s}");
        }
    }

    #[test]
    fn rejects_bad_sizes() {
        for bad in [
            "", "G", "-1", "+1", "1.5G", "1,5G", " 1G", "1G ", "1 G", "1X", "1GG", "1GiB", "1BB",
            "0x10", "1e3",
        ] {
            let err = parse_size(bad).err();
            assert!(err.is_some(), "{bad:?} parsed");
        }
        assert!(parse_size("1.5G")
            .err()
            .is_some_and(|e| e.contains("'1.5G'")));
    }

    #[test]
    fn rejects_overflow() {
        for big in ["16384P", "18446744073709551616", "99999999999999999999999"] {
            let err = parse_size(big).err();
            assert!(
                err.as_deref().is_some_and(|e| e.contains("too large")),
                "{big}: {err:?}"
            );
        }
    }

    #[test]
    fn formats_like_sheepdog() {
        let cases = [
            (0, "0.0 MB"),
            (1, "0.0 MB"),
            (512 * K, "0.5 MB"),
            (4 * M, "4.0 MB"),
            (9 * M + 900 * K, "9.9 MB"),
            (10 * M, "10 MB"),
            (864 * M, "864 MB"),
            (1023 * M, "1023 MB"),
            (G, "1.0 GB"),
            (5 * G, "5.0 GB"),
            (20 * G, "20 GB"),
            (64 * G, "64 GB"),
            (T, "1.0 TB"),
            (3 * T / 2, "1.5 TB"),
            (P, "1.0 PB"),
            (2048 * P, "2.0 EB"),
            (u64::MAX, "16 EB"),
        ];
        for (n, want) in cases {
            assert_eq!(format_size(n), want, "{n}");
        }
    }

    #[test]
    fn formatted_suffixes_parse_back() {
        for s in ["20 GB", "1 TB", "512 MB"] {
            let compact: String = s.chars().filter(|c| *c != ' ').collect();
            assert!(parse_size(&compact).is_ok(), "{compact}");
        }
    }
}
