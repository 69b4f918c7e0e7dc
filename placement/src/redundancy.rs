//! Redundancy of a VDI: `-c N` (N full copies) or `-c D:P` (erasure coding, D data and
//! P parity fragments), parsed and printed the way `dog` shows it.

use std::fmt;
use std::str::FromStr;

/// Most copies of a replicated VDI (Sheepdog's SD_MAX_COPIES).
pub const MAX_COPIES: u8 = 31;
/// Most parity fragments (Sheepdog allows P up to 15).
pub const MAX_PARITY: u8 = 15;
/// Data fragment counts we support (Sheepdog's).
pub const DATA_FRAGMENTS: [u8; 4] = [2, 4, 8, 16];

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Redundancy {
    Replicated { copies: u8 },
    Erasure { data: u8, parity: u8 },
}

impl Redundancy {
    /// Distinct zones needed to place one object.
    pub fn width(self) -> u32 {
        match self {
            Redundancy::Replicated { copies } => u32::from(copies),
            Redundancy::Erasure { data, parity } => u32::from(data) + u32::from(parity),
        }
    }
    /// Zones that may fail at once with every object still readable.
    pub fn tolerates(self) -> u32 {
        match self {
            Redundancy::Replicated { copies } => u32::from(copies).saturating_sub(1),
            Redundancy::Erasure { parity, .. } => u32::from(parity),
        }
    }
    /// Wire form: (copies or data, parity); parity 0 means replicated.
    pub fn to_wire(self) -> (u8, u8) {
        match self {
            Redundancy::Replicated { copies } => (copies, 0),
            Redundancy::Erasure { data, parity } => (data, parity),
        }
    }
    pub fn from_wire(a: u8, p: u8) -> Result<Redundancy, String> {
        let r = if p == 0 {
            Redundancy::Replicated { copies: a }
        } else {
            Redundancy::Erasure { data: a, parity: p }
        };
        r.check()
    }
    fn check(self) -> Result<Redundancy, String> {
        match self {
            Redundancy::Replicated { copies } if (1..=MAX_COPIES).contains(&copies) => Ok(self),
            Redundancy::Replicated { copies } => Err(format!(
                "{copies} copies: must be between 1 and {MAX_COPIES}"
            )),
            Redundancy::Erasure { data, parity }
                if DATA_FRAGMENTS.contains(&data) && (1..=MAX_PARITY).contains(&parity) =>
            {
                Ok(self)
            }
            Redundancy::Erasure { data, parity } => Err(format!(
                "{data}:{parity}: data fragments must be one of 2, 4, 8, 16 and parity 1 to {MAX_PARITY}"
            )),
        }
    }
}

impl FromStr for Redundancy {
    type Err = String;
    fn from_str(s: &str) -> Result<Redundancy, String> {
        let num = |t: &str| {
            t.trim()
                .parse::<u8>()
                .map_err(|_| format!("'{s}' is not a copy count (3) or an erasure scheme (4:2)"))
        };
        match s.split_once(':') {
            None => Redundancy::Replicated { copies: num(s)? }.check(),
            Some((d, p)) => Redundancy::Erasure {
                data: num(d)?,
                parity: num(p)?,
            }
            .check(),
        }
    }
}

impl fmt::Display for Redundancy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Redundancy::Replicated { copies } => write!(f, "{copies}"),
            Redundancy::Erasure { data, parity } => write!(f, "{data}:{parity}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_print() {
        assert_eq!("3".parse(), Ok(Redundancy::Replicated { copies: 3 }));
        assert_eq!(
            "4:2".parse(),
            Ok(Redundancy::Erasure { data: 4, parity: 2 })
        );
        assert_eq!(
            Redundancy::Erasure { data: 4, parity: 2 }.to_string(),
            "4:2"
        );
        for bad in ["0", "32", "3:0", "3:1", "4:16", "x", "4:", ":2", "-1", ""] {
            assert!(bad.parse::<Redundancy>().is_err(), "{bad}");
        }
        let (a, p) = Redundancy::Erasure { data: 8, parity: 3 }.to_wire();
        assert_eq!(Redundancy::from_wire(a, p).unwrap().width(), 11);
        assert!(Redundancy::from_wire(0, 0).is_err());
    }
}
