//! The pure half of `dog`: its command line (parsed into a [`Command`] against one table
//! of commands and one of options) and the text it prints, in Sheepdog's columns. The
//! binary (`bin/dog.rs`) only connects, calls and writes; everything here is testable
//! without a sheep.

use std::ffi::CStr;
use std::fmt::Write as _;

use collie_net::admin::MAX_NAME;
use collie_net::admin::{
    AdminError, CheckReport, ClusterInfo, MemberRecovery, NodeEntry, NodeInfo, ObjectLocation,
    RecoveryStat, VdiInfo, INODE_INDEX,
};
use collie_placement::Redundancy;

use crate::units::{format_size, parse_size};

pub const DEFAULT_ADDR: &str = "127.0.0.1";
pub const DEFAULT_PORT: u16 = 7000;
/// Sheepdog's default `-c` for `cluster format`.
pub const DEFAULT_REDUNDANCY: Redundancy = Redundancy::Replicated { copies: 3 };
/// Virtual nodes per node shown by `cluster info`: the ring's count for a node of
/// average capacity (until the epoch history carries each node's own count).
pub const VNODES: u64 = collie_placement::ring::DEFAULT_VNODES;
/// Exit code for a bad command line; every other failure exits with [`EXIT_FAILURE`].
pub const EXIT_USAGE: u8 = 2;
pub const EXIT_FAILURE: u8 = 1;

/// What the user asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    ClusterFormat {
        redundancy: Redundancy,
        force: bool,
    },
    ClusterInfo {
        raw: bool,
    },
    ClusterShutdown,
    /// `cluster recover enable|disable|rate RATE`: change recovery on every node.
    ClusterRecover {
        enabled: Option<bool>,
        /// Bytes per second; 0 is no limit.
        rate: Option<u64>,
    },
    /// `cluster recover info`: each node's recovery switch and rate.
    ClusterRecoverInfo {
        raw: bool,
    },
    /// `cluster check`: `vdi check` of every VDI.
    ClusterCheck {
        raw: bool,
    },
    NodeInfo {
        raw: bool,
    },
    /// `node recovery`: each node's recovery progress in the current epoch.
    NodeRecovery {
        raw: bool,
    },
    NodeList {
        raw: bool,
    },
    /// Stop the node with this id (its `Id` in `node list`).
    NodeKill {
        id: u32,
    },
    VdiCreate {
        name: String,
        size: u64,
        redundancy: Option<Redundancy>,
    },
    VdiList {
        raw: bool,
        name: Option<String>,
    },
    VdiDelete {
        name: String,
    },
    VdiResize {
        name: String,
        size: u64,
    },
    /// `len: None` reads to the end of the VDI.
    VdiRead {
        name: String,
        offset: u64,
        len: Option<u64>,
    },
    /// `len: None` writes stdin until EOF.
    VdiWrite {
        name: String,
        offset: u64,
        len: Option<u64>,
    },
    /// `vdi object location`: which nodes hold object `index` of the VDI (no index:
    /// its inode object, as Sheepdog's `dog vdi object` without `-i`).
    VdiObjectLocation {
        name: String,
        index: Option<u64>,
        raw: bool,
    },
    /// `vdi check`: verify every copy or stripe and repair what is wrong (as Sheepdog does).
    VdiCheck {
        name: String,
        raw: bool,
    },
}

/// A parsed command line: which sheep to ask and what to ask it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invocation {
    pub addr: String,
    pub port: u16,
    pub command: Command,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Parsed {
    Run(Invocation),
    /// `-h`/`--help`: print [`help_text`] and exit 0.
    Help,
}

/// A bad command line: `dog: MESSAGE` then `usage` on stderr, exit [`EXIT_USAGE`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsageError {
    pub message: String,
    /// One or more `usage:` lines, newline-terminated.
    pub usage: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Opt {
    Address,
    Port,
    Help,
    Copies,
    Force,
    Raw,
}

struct OptSpec {
    opt: Opt,
    short: char,
    long: &'static str,
    /// Placeholder of the value it takes; `None` for a flag.
    value: Option<&'static str>,
    about: &'static str,
}

/// Every option; `-a`, `-p` and `-h` are global, the rest apply to the commands that
/// list them.
#[rustfmt::skip]
const OPTIONS: [OptSpec; 6] = [
    opt(Opt::Address, 'a', "address", Some("ADDR"), "sheep to talk to (default 127.0.0.1)"),
    opt(Opt::Port, 'p', "port", Some("PORT"), "its port (default 7000)"),
    opt(Opt::Copies, 'c', "copies", Some("N|D:P"), "N full copies, or D data + P parity fragments (erasure coding)"),
    opt(Opt::Force, 'f', "force", None, "format even an already formatted cluster (erases it)"),
    opt(Opt::Raw, 'r', "raw", None, "raw output for scripts: bytes and unix times"),
    opt(Opt::Help, 'h', "help", None, "show this help"),
];

const fn opt(
    opt: Opt,
    short: char,
    long: &'static str,
    value: Option<&'static str>,
    about: &'static str,
) -> OptSpec {
    OptSpec {
        opt,
        short,
        long,
        value,
        about,
    }
}

const GLOBAL_OPTS: [Opt; 3] = [Opt::Address, Opt::Port, Opt::Help];

struct CmdSpec {
    group: &'static str,
    /// One word, or several for a deeper command (`object location`).
    name: &'static str,
    opts: &'static [Opt],
    /// Positional arguments; `[X]` marks optional ones.
    args: &'static str,
    min_args: usize,
    max_args: usize,
    about: &'static str,
}

/// Sheepdog's command tree, the part Collie implements.
#[rustfmt::skip]
const COMMANDS: [CmdSpec; 20] = [
    cmd("cluster", "format", &[Opt::Copies, Opt::Force], "", 0, 0, "format the cluster (default redundancy: 3 copies)"),
    cmd("cluster", "info", &[Opt::Raw], "", 0, 0, "show status, recovery, creation time and epoch history"),
    cmd("cluster", "shutdown", &[], "", 0, 0, "stop every sheep cleanly"),
    cmd("cluster", "check", &[Opt::Raw], "", 0, 0, "verify every copy and stripe of every VDI and repair what is wrong"),
    cmd("cluster", "recover info", &[Opt::Raw], "", 0, 0, "show whether each node recovers, and at what rate"),
    cmd("cluster", "recover enable", &[], "", 0, 0, "resume background recovery on every node"),
    cmd("cluster", "recover disable", &[], "", 0, 0, "pause background recovery on every node (objects clients use are still recovered)"),
    cmd("cluster", "recover rate", &[], "RATE", 1, 1, "limit each node's recovery to RATE bytes per second (0: no limit)"),
    cmd("node", "list", &[Opt::Raw], "", 0, 0, "list the nodes of the cluster"),
    cmd("node", "info", &[Opt::Raw], "", 0, 0, "show each node's disk use"),
    cmd("node", "recovery", &[Opt::Raw], "", 0, 0, "show each node's recovery progress"),
    cmd("node", "kill", &[], "ID", 1, 1, "stop the node with this Id (see 'dog node list')"),
    cmd("vdi", "create", &[Opt::Copies], "NAME SIZE", 2, 2, "create a VDI (SIZE like 20G)"),
    cmd("vdi", "list", &[Opt::Raw], "[NAME]", 0, 1, "list VDIs"),
    cmd("vdi", "delete", &[], "NAME", 1, 1, "delete a VDI and its data"),
    cmd("vdi", "resize", &[], "NAME SIZE", 2, 2, "change a VDI's size"),
    cmd("vdi", "read", &[], "NAME [OFFSET [LEN]]", 1, 3, "copy LEN bytes (default: to the end) of a VDI to stdout"),
    cmd("vdi", "write", &[], "NAME [OFFSET [LEN]]", 1, 3, "copy stdin (LEN bytes, default: until EOF) into a VDI"),
    cmd("vdi", "object location", &[Opt::Raw], "NAME [INDEX]", 1, 2, "show which nodes hold object INDEX (0, 1, ...) of a VDI, or its inode"),
    cmd("vdi", "check", &[Opt::Raw], "NAME", 1, 1, "verify every copy or stripe of a VDI and repair what is wrong"),
];

const fn cmd(
    group: &'static str,
    name: &'static str,
    opts: &'static [Opt],
    args: &'static str,
    min_args: usize,
    max_args: usize,
    about: &'static str,
) -> CmdSpec {
    CmdSpec {
        group,
        name,
        opts,
        args,
        min_args,
        max_args,
        about,
    }
}

/// The command of `group` whose words `words` starts with (the longest, should one
/// command's name begin another's).
fn find_command(group: &str, words: &[&str]) -> Result<&'static CmdSpec, UsageError> {
    let in_group = || COMMANDS.iter().filter(move |c| c.group == group);
    let found = in_group()
        .filter(|c| {
            let n = c.name.split(' ').count();
            n <= words.len() && c.name.split(' ').zip(words).all(|(w, a)| w == *a)
        })
        .max_by_key(|c| c.name.len());
    if let Some(spec) = found {
        return Ok(spec);
    }
    let usage = || short_usage(Some(group));
    let Some(&first) = words.first() else {
        return Err(usage_err(format!("'{group}' needs a subcommand"), usage()));
    };
    // `vdi object` alone, or `vdi object frob`: the first word opens deeper commands.
    let opens_deeper = in_group().any(|c| c.name.split_once(' ').map(|(w, _)| w) == Some(first));
    match words.get(1) {
        None if opens_deeper => Err(usage_err(
            format!("'{group} {first}' needs a subcommand"),
            usage(),
        )),
        Some(second) if opens_deeper => Err(usage_err(
            format!("unknown command '{group} {first} {second}'"),
            usage(),
        )),
        _ => Err(usage_err(
            format!("unknown command '{group} {first}'"),
            usage(),
        )),
    }
}

fn opt_spec(opt: Opt) -> &'static OptSpec {
    // Every `Opt` has a row; the table test checks it.
    let i = OPTIONS.iter().position(|s| s.opt == opt).unwrap_or(0);
    &OPTIONS[i]
}

fn opt_name(opt: Opt) -> String {
    let s = opt_spec(opt);
    format!("-{}/--{}", s.short, s.long)
}

/// `cluster format [-c N|D:P] [-f]`
fn synopsis(c: &CmdSpec) -> String {
    let mut s = format!("{} {}", c.group, c.name);
    for &o in c.opts {
        let spec = opt_spec(o);
        match spec.value {
            Some(v) => write!(s, " [-{} {v}]", spec.short),
            None => write!(s, " [-{}]", spec.short),
        }
        .ok();
    }
    if !c.args.is_empty() {
        s.push(' ');
        s.push_str(c.args);
    }
    s
}

fn command_lines<'a>(cmds: impl Iterator<Item = &'a CmdSpec>, about: bool) -> String {
    let cmds: Vec<&CmdSpec> = cmds.collect();
    let width = cmds.iter().map(|c| synopsis(c).len()).max().unwrap_or(0);
    let mut out = String::new();
    for c in cmds {
        if about {
            writeln!(out, "  dog {:<width$}  {}", synopsis(c), c.about).ok();
        } else {
            writeln!(out, "  dog {}", synopsis(c)).ok();
        }
    }
    out
}

/// Short usage for error messages: the commands of `group` (all if `None` or unknown).
pub fn short_usage(group: Option<&str>) -> String {
    let known = group.filter(|g| COMMANDS.iter().any(|c| c.group == *g));
    let cmds = COMMANDS
        .iter()
        .filter(|c| known.is_none() || known == Some(c.group));
    format!(
        "usage:\n{}run 'dog -h' for options\n",
        command_lines(cmds, false)
    )
}

fn command_usage(c: &CmdSpec) -> String {
    format!("usage: dog {}\n", synopsis(c))
}

/// The full `dog -h` text.
pub fn help_text() -> String {
    let mut out = String::from("usage: dog [-a ADDR] [-p PORT] COMMAND [OPTIONS] [ARGS]\n\n");
    out.push_str(&command_lines(COMMANDS.iter(), true));
    out.push_str("\noptions:\n");
    let flag = |s: &OptSpec| match s.value {
        Some(v) => format!("-{}, --{} {v}", s.short, s.long),
        None => format!("-{}, --{}", s.short, s.long),
    };
    let width = OPTIONS.iter().map(|s| flag(s).len()).max().unwrap_or(0);
    for s in &OPTIONS {
        writeln!(out, "  {:<width$}  {}", flag(s), s.about).ok();
    }
    out.push_str(
        "\nSIZE, OFFSET and LEN are bytes, or take a K, M, G, T or P suffix (1024-based).\n\
         RATE is bytes per second, with the same suffixes (100M).\n",
    );
    out
}

#[derive(Default)]
struct Seen {
    addr: Option<String>,
    port: Option<String>,
    copies: Option<String>,
    force: bool,
    raw: bool,
    help: bool,
    used: Vec<Opt>,
}

fn usage_err(message: impl Into<String>, usage: String) -> UsageError {
    UsageError {
        message: message.into(),
        usage,
    }
}

/// Parses `dog`'s arguments (without the program name). Options may come anywhere;
/// `--` ends them, so a VDI name may start with `-`.
pub fn parse_args<S: AsRef<str>>(args: &[S]) -> Result<Parsed, UsageError> {
    let mut seen = Seen::default();
    let mut pos: Vec<&str> = Vec::new();
    let mut only_positional = false;
    let mut it = args.iter().map(AsRef::as_ref);
    while let Some(arg) = it.next() {
        if only_positional || arg == "-" || !arg.starts_with('-') {
            pos.push(arg);
            continue;
        }
        if arg == "--" {
            only_positional = true;
            continue;
        }
        let unknown = || usage_err(format!("unknown option '{arg}'"), short_usage(None));
        let (spec, inline) = if let Some(long) = arg.strip_prefix("--") {
            let (name, inline) = match long.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (long, None),
            };
            let spec = OPTIONS
                .iter()
                .find(|s| s.long == name)
                .ok_or_else(unknown)?;
            (spec, inline)
        } else {
            let mut chars = arg[1..].chars();
            let short = chars.next();
            let spec = OPTIONS
                .iter()
                .find(|s| Some(s.short) == short)
                .ok_or_else(unknown)?;
            let rest = chars.as_str();
            if spec.value.is_none() && !rest.is_empty() {
                return Err(unknown());
            }
            (spec, (!rest.is_empty()).then_some(rest))
        };
        let value = match (spec.value, inline) {
            (Some(_), Some(v)) => Some(v.to_string()),
            (Some(placeholder), None) => match it.next() {
                Some(v) => Some(v.to_string()),
                None => {
                    return Err(usage_err(
                        format!(
                            "option {} needs a value ({placeholder})",
                            opt_name(spec.opt)
                        ),
                        short_usage(None),
                    ))
                }
            },
            (None, Some(_)) => {
                return Err(usage_err(
                    format!("option {} takes no value", opt_name(spec.opt)),
                    short_usage(None),
                ))
            }
            (None, None) => None,
        };
        match spec.opt {
            Opt::Address => seen.addr = value,
            Opt::Port => seen.port = value,
            Opt::Copies => seen.copies = value,
            Opt::Force => seen.force = true,
            Opt::Raw => seen.raw = true,
            Opt::Help => seen.help = true,
        }
        seen.used.push(spec.opt);
    }
    if seen.help {
        return Ok(Parsed::Help);
    }

    let Some((&group, rest)) = pos.split_first() else {
        return Err(usage_err("no command given", short_usage(None)));
    };
    if !COMMANDS.iter().any(|c| c.group == group) {
        return Err(usage_err(
            format!("unknown command '{group}'"),
            short_usage(None),
        ));
    }
    let spec = find_command(group, rest)?;
    let name = spec.name;
    let args = &rest[spec.name.split(' ').count()..];
    let cmd_err = |message: String| usage_err(message, command_usage(spec));
    if args.len() < spec.min_args {
        return Err(cmd_err(format!("'{group} {name}' needs more arguments")));
    }
    if args.len() > spec.max_args {
        return Err(cmd_err(format!(
            "too many arguments for '{group} {name}': '{}'",
            args[spec.max_args]
        )));
    }
    if let Some(&bad) = seen
        .used
        .iter()
        .find(|o| !GLOBAL_OPTS.contains(o) && !spec.opts.contains(o))
    {
        return Err(cmd_err(format!(
            "option {} does not apply to '{group} {name}'",
            opt_name(bad)
        )));
    }

    let addr = seen.addr.unwrap_or_else(|| DEFAULT_ADDR.to_string());
    if addr.is_empty() {
        return Err(usage_err("empty address (-a)", short_usage(None)));
    }
    let port = match &seen.port {
        None => DEFAULT_PORT,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n != 0 => n,
            _ => {
                return Err(usage_err(
                    format!("invalid port '{p}': expected 1 to 65535"),
                    short_usage(None),
                ))
            }
        },
    };
    let redundancy = match &seen.copies {
        None => None,
        Some(c) => Some(
            c.parse::<Redundancy>()
                .map_err(|e| cmd_err(format!("invalid -c '{c}': {e}")))?,
        ),
    };
    let vdi_name = |i: usize| -> Result<String, UsageError> {
        let n = args[i];
        if n.is_empty() {
            return Err(cmd_err("empty VDI name".into()));
        }
        if n.len() > MAX_NAME {
            return Err(cmd_err(format!(
                "VDI name of {} bytes is longer than {MAX_NAME}",
                n.len()
            )));
        }
        Ok(n.to_string())
    };
    let size = |i: usize| parse_size(args[i]).map_err(cmd_err);
    let number = |i: usize, what: &str, hint: &str| -> Result<u64, UsageError> {
        let s = args[i];
        match s.parse::<u64>() {
            Ok(n) if s.bytes().all(|b| b.is_ascii_digit()) => Ok(n),
            _ => Err(cmd_err(format!(
                "invalid {what} '{s}': expected a whole number{hint}"
            ))),
        }
    };
    let opt_size = |i: usize| {
        args.get(i)
            .map(|s| parse_size(s).map_err(cmd_err))
            .transpose()
    };

    let command = match (group, name) {
        ("cluster", "format") => Command::ClusterFormat {
            redundancy: redundancy.unwrap_or(DEFAULT_REDUNDANCY),
            force: seen.force,
        },
        ("cluster", "info") => Command::ClusterInfo { raw: seen.raw },
        ("cluster", "shutdown") => Command::ClusterShutdown,
        ("cluster", "recover info") => Command::ClusterRecoverInfo { raw: seen.raw },
        ("cluster", "check") => Command::ClusterCheck { raw: seen.raw },
        ("cluster", "recover enable") => Command::ClusterRecover {
            enabled: Some(true),
            rate: None,
        },
        ("cluster", "recover disable") => Command::ClusterRecover {
            enabled: Some(false),
            rate: None,
        },
        ("cluster", "recover rate") => {
            let r = args[0];
            let rate = parse_size(r).map_err(|_| {
                cmd_err(format!(
                    "invalid rate '{r}': give bytes per second as a whole number with an \
                     optional K, M, G, T or P suffix (1024-based), e.g. 100M; 0 is no limit"
                ))
            })?;
            Command::ClusterRecover {
                enabled: None,
                rate: Some(rate),
            }
        }
        ("node", "info") => Command::NodeInfo { raw: seen.raw },
        ("node", "recovery") => Command::NodeRecovery { raw: seen.raw },
        ("node", "list") => Command::NodeList { raw: seen.raw },
        ("node", "kill") => {
            let id = number(0, "node id", " (see 'dog node list')")?;
            Command::NodeKill {
                id: u32::try_from(id)
                    .map_err(|_| cmd_err(format!("invalid node id '{id}': no such node")))?,
            }
        }
        ("vdi", "create") => Command::VdiCreate {
            name: vdi_name(0)?,
            size: size(1)?,
            redundancy,
        },
        ("vdi", "list") => Command::VdiList {
            raw: seen.raw,
            name: if args.is_empty() {
                None
            } else {
                Some(vdi_name(0)?)
            },
        },
        ("vdi", "delete") => Command::VdiDelete { name: vdi_name(0)? },
        ("vdi", "resize") => Command::VdiResize {
            name: vdi_name(0)?,
            size: size(1)?,
        },
        ("vdi", "read") => Command::VdiRead {
            name: vdi_name(0)?,
            offset: opt_size(1)?.unwrap_or(0),
            len: opt_size(2)?,
        },
        ("vdi", "write") => Command::VdiWrite {
            name: vdi_name(0)?,
            offset: opt_size(1)?.unwrap_or(0),
            len: opt_size(2)?,
        },
        ("vdi", "object location") => Command::VdiObjectLocation {
            name: vdi_name(0)?,
            index: match args.get(1) {
                None => None,
                Some(_) => match number(1, "object index", " (0 is the VDI's first object)")? {
                    // The wire's name for the inode; no VDI has that many objects.
                    INODE_INDEX => {
                        return Err(cmd_err(format!(
                            "object index {INODE_INDEX} is past the end of any VDI"
                        )))
                    }
                    i => Some(i),
                },
            },
            raw: seen.raw,
        },
        ("vdi", "check") => Command::VdiCheck {
            name: vdi_name(0)?,
            raw: seen.raw,
        },
        _ => {
            return Err(usage_err(
                format!("'{group} {name}' is not implemented"),
                short_usage(Some(group)),
            ))
        }
    };
    Ok(Parsed::Run(Invocation {
        addr,
        port,
        command,
    }))
}

/// Which clock dates are printed in: local time for users (as Sheepdog), UTC for tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeZone {
    Local,
    Utc,
}

/// `strftime` of unix seconds; falls back to the number if the C library cannot.
pub fn format_time(secs: u64, fmt: &CStr, tz: TimeZone) -> String {
    let Ok(t) = libc::time_t::try_from(secs) else {
        return secs.to_string();
    };
    // SAFETY: `tm` is plain data (integers and a pointer) for which all zeroes is valid.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are valid for the call; the `_r` variants write only `tm`.
    let filled = unsafe {
        match tz {
            TimeZone::Local => !libc::localtime_r(&t, &mut tm).is_null(),
            TimeZone::Utc => !libc::gmtime_r(&t, &mut tm).is_null(),
        }
    };
    if !filled {
        return secs.to_string();
    }
    let mut buf = [0u8; 128];
    // SAFETY: `buf` is writable for its length, `fmt` is NUL-terminated and `tm` was
    // filled above; strftime writes at most `buf.len()` bytes and returns how many.
    let n = unsafe { libc::strftime(buf.as_mut_ptr().cast(), buf.len(), fmt.as_ptr(), &tm) };
    String::from_utf8_lossy(&buf[..n.min(buf.len())]).into_owned()
}

/// `dog cluster info`: status, then (once formatted) the creation time and the epoch
/// history, newest first, as Sheepdog prints them. Raw output drops the labels and
/// prints unix seconds.
///
/// After a restart the cluster serves nothing until every member of the last epoch is
/// back: the status says so and the members still missing follow it, as
/// `Waiting for nodes: A, B` (raw: one `waiting ADDR` line each, before the epochs).
///
/// A formatted cluster's recovery follows the redundancy, as
/// `Cluster recovery: enabled, complete` (see [`recovery_summary`]). Raw output leaves
/// it out, so its lines stay what scripts parse; they use `dog node recovery -r`.
pub fn format_cluster_info(ci: &ClusterInfo, raw: bool, tz: TimeZone) -> String {
    let mut out = String::new();
    let label = if raw { "" } else { "Cluster status: " };
    if !ci.waiting_for.is_empty() {
        writeln!(out, "{label}Waiting for other nodes to join cluster").ok();
        if raw {
            for n in &ci.waiting_for {
                writeln!(out, "waiting {}", escape(n)).ok();
            }
        } else {
            writeln!(out, "Waiting for nodes: {}", ci.waiting_for.join(", ")).ok();
        }
    }
    let Some(f) = &ci.formatted else {
        if ci.waiting_for.is_empty() {
            writeln!(out, "{label}Waiting for cluster to be formatted").ok();
        }
        return out;
    };
    if ci.waiting_for.is_empty() {
        writeln!(out, "{label}running").ok();
    }
    if !raw {
        writeln!(out, "Cluster default redundancy: {}", f.default_redundancy).ok();
        if let Some(r) = recovery_summary(&ci.recovery) {
            writeln!(out, "Cluster recovery: {r}").ok();
        }
        writeln!(
            out,
            "\nCluster created at {}\n",
            format_time(f.ctime, c"%a %b %e %H:%M:%S %Y", tz)
        )
        .ok();
        out.push_str("Epoch Time           Version [Host:Port:V-Nodes,,,]\n");
    }
    let mut epochs: Vec<_> = ci.epochs.iter().collect();
    epochs.sort_by_key(|e| std::cmp::Reverse(e.epoch));
    for e in epochs {
        let nodes: Vec<String> = e.nodes.iter().map(|n| format!("{n}:{VNODES}")).collect();
        if raw {
            write!(out, "{} {}", e.time, e.epoch).ok();
        } else {
            let time = format_time(e.time, c"%Y-%m-%d %H:%M:%S", tz);
            write!(out, "{time} {:6}", e.epoch).ok();
        }
        writeln!(out, " [{}]", nodes.join(", ")).ok();
    }
    out
}

/// One node's recovery state: `complete` once it holds everything placement gives it
/// in the epoch, `paused` when unfinished and disabled, `running` otherwise.
pub fn recovery_state(s: &RecoveryStat) -> &'static str {
    if s.complete {
        "complete"
    } else if !s.enabled {
        "paused"
    } else {
        "running"
    }
}

/// Objects done of the total as a percentage with one decimal, rounded down (`61.7%`);
/// a complete recovery is 100%, one that has not counted its objects yet 0%.
pub fn recovery_progress(s: &RecoveryStat) -> String {
    if s.complete {
        return "100.0%".into();
    }
    if s.objects_total == 0 {
        return "0.0%".into();
    }
    let done = s.objects_done.min(s.objects_total);
    let permille = u128::from(done) * 1000 / u128::from(s.objects_total);
    format!("{}.{}%", permille / 10, permille % 10)
}

/// A recovery rate limit for people: `unlimited` for 0, else bytes per second in the
/// units of the tables (`100 MB/s`), in B/s or KB/s below a megabyte.
pub fn format_rate(bytes_per_sec: u64) -> String {
    const K: u64 = 1 << 10;
    const M: u64 = 1 << 20;
    match bytes_per_sec {
        0 => "unlimited".into(),
        n if n < K => format!("{n} B/s"),
        n if n < M => {
            let k = n as f64 / K as f64;
            if k >= 10.0 {
                format!("{k:.0} KB/s")
            } else {
                format!("{k:.1} KB/s")
            }
        }
        n => format!("{}/s", format_size(n)),
    }
}

/// The members' recovery as one phrase for `dog cluster info`: whether it is enabled
/// (`enabled on 2 of 3 nodes` when the nodes disagree) and whether it is `running`
/// (on any node), `paused` (unfinished only where disabled) or `complete`, then the
/// nodes that did not answer. `None` for no members (an unformatted cluster).
pub fn recovery_summary(members: &[MemberRecovery]) -> Option<String> {
    if members.is_empty() {
        return None;
    }
    let stats: Vec<&RecoveryStat> = members
        .iter()
        .filter_map(|m| m.stat.as_ref().ok())
        .collect();
    let silent: Vec<&str> = members
        .iter()
        .filter(|m| m.stat.is_err())
        .map(|m| m.addr.as_str())
        .collect();
    let mut out = if stats.is_empty() {
        "unknown".to_string()
    } else {
        let on = stats.iter().filter(|s| s.enabled).count();
        let enabled = if on == stats.len() {
            "enabled".to_string()
        } else if on == 0 {
            "disabled".to_string()
        } else {
            format!("enabled on {on} of {} nodes", stats.len())
        };
        let state = if stats.iter().any(|s| recovery_state(s) == "running") {
            "running"
        } else if stats.iter().any(|s| !s.complete) {
            "paused"
        } else {
            "complete"
        };
        // Per node: the nodes holding parts of one lost object each count it.
        let lost = stats.iter().filter(|s| s.objects_lost > 0).count();
        if lost > 0 {
            format!(
                "{enabled}, {state}, objects lost on {lost} of {} nodes",
                stats.len()
            )
        } else {
            format!("{enabled}, {state}")
        }
    };
    if !silent.is_empty() {
        write!(out, " (no answer from {})", silent.join(", ")).ok();
    }
    Some(out)
}

/// One warning line per node that did not tell its recovery state (with its reason)
/// or found objects it could not recover.
pub fn recovery_notes(members: &[MemberRecovery]) -> Vec<String> {
    let mut rows: Vec<&MemberRecovery> = members.iter().collect();
    rows.sort_by_key(|m| m.id);
    rows.into_iter()
        .filter_map(|m| match &m.stat {
            Err(why) => Some(format!(
                "Note: node {} ({}) did not answer: {why}",
                m.id, m.addr
            )),
            Ok(s) if s.objects_lost > 0 => Some(format!(
                "Note: node {} ({}) could not recover {} objects: too few copies or \
                 fragments are left (dog cluster check lists what cannot be read)",
                m.id, m.addr, s.objects_lost
            )),
            Ok(_) => None,
        })
        .collect()
}

/// The header `dog node recovery` prints above its rows (not in raw mode).
pub const NODE_RECOVERY_HEADER: &str =
    "  Id   Host:Port             Epoch  State             Objects  Progress    Bytes\n";

/// `dog node recovery`: each member (by id) with the epoch its recovery is for, its
/// state (`complete`, `running`, `paused`, or `unknown` when it did not answer),
/// objects done/total, progress and bytes recovered onto it; then a note per node that
/// did not answer or found objects lost. Raw lines are `IDX ADDR EPOCH STATE DONE
/// TOTAL BYTES LOST`, bytes in bytes, LOST the objects done that could not be recovered,
/// and `-` for what an unanswered node did not say; the caller prints the notes
/// (stderr).
pub fn format_node_recovery(members: &[MemberRecovery], raw: bool) -> String {
    let mut rows: Vec<&MemberRecovery> = members.iter().collect();
    rows.sort_by_key(|m| m.id);
    let mut out = String::new();
    if !raw {
        out.push_str(NODE_RECOVERY_HEADER);
    }
    for m in rows {
        match (&m.stat, raw) {
            (Ok(s), true) => writeln!(
                out,
                "{} {} {} {} {} {} {} {}",
                m.id,
                escape(&m.addr),
                s.epoch,
                recovery_state(s),
                s.objects_done,
                s.objects_total,
                s.bytes,
                s.objects_lost
            ),
            (Err(_), true) => writeln!(out, "{} {} - unknown - - - -", m.id, escape(&m.addr)),
            (Ok(s), false) => writeln!(
                out,
                "{:4}   {:<20} {:6}  {:<8} {:>16} {:>9} {:>8}",
                m.id,
                m.addr,
                s.epoch,
                recovery_state(s),
                format!("{}/{}", s.objects_done, s.objects_total),
                recovery_progress(s),
                format_size(s.bytes)
            ),
            (Err(_), false) => writeln!(
                out,
                "{:4}   {:<20} {:>6}  {:<8} {:>16} {:>9} {:>8}",
                m.id, m.addr, "-", "unknown", "-", "-", "-"
            ),
        }
        .ok();
    }
    if !raw {
        push_recovery_notes(&mut out, members);
    }
    out
}

/// Appends, after a blank line, a note per member that did not answer.
fn push_recovery_notes(out: &mut String, members: &[MemberRecovery]) {
    let notes = recovery_notes(members);
    if !notes.is_empty() {
        out.push('\n');
        for n in notes {
            out.push_str(&n);
            out.push('\n');
        }
    }
}

/// The header `dog cluster recover info` prints above its rows (not in raw mode).
pub const RECOVER_INFO_HEADER: &str = "  Id   Host:Port            Recovery  Max rate\n";

/// `dog cluster recover info`: each member's recovery switch (`enabled`, `disabled`,
/// or `unknown` when it did not answer) and rate limit, then a note per node that did
/// not answer. Raw lines are `IDX ADDR enabled|disabled|unknown RATE`, RATE in bytes
/// per second (0: no limit, `-`: unknown); the caller prints the notes (stderr).
pub fn format_recover_info(members: &[MemberRecovery], raw: bool) -> String {
    let mut rows: Vec<&MemberRecovery> = members.iter().collect();
    rows.sort_by_key(|m| m.id);
    let mut out = String::new();
    if !raw {
        out.push_str(RECOVER_INFO_HEADER);
    }
    for m in rows {
        let (switch, rate) = match &m.stat {
            Ok(s) if s.enabled => ("enabled", Some(s.rate)),
            Ok(s) => ("disabled", Some(s.rate)),
            Err(_) => ("unknown", None),
        };
        if raw {
            let rate = rate.map_or_else(|| "-".to_string(), |r| r.to_string());
            writeln!(out, "{} {} {switch} {rate}", m.id, escape(&m.addr)).ok();
        } else {
            let rate = rate.map_or_else(|| "-".to_string(), format_rate);
            writeln!(out, "{:4}   {:<20} {switch:<9} {rate}", m.id, m.addr).ok();
        }
    }
    if !raw {
        push_recovery_notes(&mut out, members);
    }
    out
}

/// What `dog cluster recover enable|disable|rate` prints once every node took it.
pub fn recover_done(enabled: Option<bool>, rate: Option<u64>) -> String {
    let mut out = String::new();
    match enabled {
        Some(true) => out.push_str("Cluster recovery: enabled\n"),
        Some(false) => out.push_str(
            "Cluster recovery: disabled (objects clients use are still brought up to date)\n",
        ),
        None => {}
    }
    if let Some(r) = rate {
        writeln!(out, "Cluster recovery rate: {}", format_rate(r)).ok();
    }
    out
}

/// The header `dog node list` prints above its rows (not in raw mode).
pub const NODE_LIST_HEADER: &str = "  Id   Host:Port         V-Nodes       Zone\n";

/// `dog node list`: the members of the current epoch by id, in Sheepdog's columns
/// (`%4d   %-20s\t%2d%11u`). Raw lines are `ID ADDR VNODES ZONE NBD_PORT`: Sheepdog's
/// four fields, then the port that serves the node's VDIs over NBD.
pub fn format_node_list(nodes: &[NodeEntry], raw: bool) -> String {
    let mut rows: Vec<&NodeEntry> = nodes.iter().collect();
    rows.sort_by_key(|n| n.id);
    let mut out = String::new();
    if !raw {
        out.push_str(NODE_LIST_HEADER);
    }
    for n in rows {
        if raw {
            writeln!(
                out,
                "{} {} {} {} {}",
                n.id,
                escape(&n.addr),
                n.vnodes,
                n.zone,
                n.nbd_port
            )
        } else {
            writeln!(
                out,
                "{:4}   {:<20}\t{:2}{:11}",
                n.id, n.addr, n.vnodes, n.zone
            )
        }
        .ok();
    }
    out
}

/// The line `dog vdi object location` prints for an object no node holds.
pub fn object_not_written(oid: u64) -> String {
    format!("object 0x{oid:016x} is not written yet (reads as zeros)\n")
}

/// `dog vdi object location`: Sheepdog's `Looking for the object ...` line, then each
/// placement target in order with whether it has its copy (or fragment), then the
/// copies found on nodes placement does not choose. `nodes` is the size of the cluster.
///
/// Raw output is one line per copy, targets first in placement order:
/// `ADDR ZONE USED CRC target|misplaced`, USED in bytes and CRC (CRC32C of the copy as
/// it reads) as 8 hex digits; nothing at all when no node holds the object.
/// `dog vdi check`: one summary (raw: `objects stripes consistent repaired lost
/// unplaced`). Stripes counted consistent were so before any repair.
/// Why `dog vdi check` / `dog cluster check` fails: what of `name` cannot be read.
pub fn check_lost(name: &str, r: &CheckReport) -> Option<String> {
    match (r.lost, r.stripes) {
        (0, _) => None,
        (n, 0) => Some(format!("{n} objects of '{name}' have no readable copy")),
        (n, _) => Some(format!("{n} stripes of '{name}' cannot be decoded")),
    }
}

pub fn format_check(name: &str, r: &CheckReport, raw: bool) -> String {
    if raw {
        return format!(
            "{} {} {} {} {} {}\n",
            r.objects, r.stripes, r.consistent, r.repaired, r.lost, r.unplaced
        );
    }
    if r.stripes == 0 {
        // Replicated: counted in objects.
        let mut out = format!(
            "{name}: {} objects: {} consistent, {} repaired, {} lost\n",
            r.objects, r.consistent, r.repaired, r.lost
        );
        if r.unplaced > 0 {
            writeln!(
                out,
                "{} copies have no node to hold them: the cluster has fewer zones than copies",
                r.unplaced
            )
            .ok();
        }
        return out;
    }
    let mut out = format!(
        "{name}: {} objects, {} stripes: {} consistent, {} repaired, {} lost\n",
        r.objects, r.stripes, r.consistent, r.repaired, r.lost
    );
    if r.unplaced > 0 {
        writeln!(
            out,
            "{} fragment stripes have no node to hold them: the cluster has fewer zones \
             than data + parity fragments",
            r.unplaced
        )
        .ok();
    }
    out
}

pub fn format_object_location(loc: &ObjectLocation, nodes: usize, raw: bool) -> String {
    let mut out = String::new();
    let is_target = |addr: &str| loc.targets.iter().any(|t| t == addr);
    if raw {
        let placed = loc
            .targets
            .iter()
            .flat_map(|t| loc.copies.iter().filter(move |c| &c.addr == t));
        let misplaced = loc.copies.iter().filter(|c| !is_target(&c.addr));
        for (c, kind) in placed
            .map(|c| (c, "target"))
            .chain(misplaced.map(|c| (c, "misplaced")))
        {
            writeln!(
                out,
                "{} {} {} {:08x} {kind}",
                escape(&c.addr),
                c.zone,
                c.used,
                c.crc
            )
            .ok();
        }
        return out;
    }
    if loc.copies.is_empty() {
        return object_not_written(loc.oid);
    }
    let vid = (loc.oid >> 32) as u32 & collie_placement::ids::MAX_VID;
    let idx = match collie_placement::ids::object_kind(loc.oid) {
        collie_placement::ids::ObjectKind::Inode { .. } => "inode".to_string(),
        _ => format!("idx {}", loc.oid as u32),
    };
    let redundancy = match loc.redundancy {
        Redundancy::Replicated { copies } => format!("{copies} copies"),
        Redundancy::Erasure { data, parity } => format!("{data}:{parity} fragments"),
    };
    writeln!(
        out,
        "Looking for the object 0x{:016x} (vid 0x{vid:x} {idx}, {redundancy}) with {nodes} nodes\n",
        loc.oid
    )
    .ok();
    for t in &loc.targets {
        if loc.copies.iter().any(|c| &c.addr == t) {
            writeln!(out, "  {t} has the object").ok();
        } else {
            writeln!(out, "  {t} should have the object but doesn't").ok();
        }
    }
    for c in loc.copies.iter().filter(|c| !is_target(&c.addr)) {
        writeln!(out, "  {} has a misplaced copy", c.addr).ok();
    }
    out
}

fn percent(used: u64, size: u64) -> u64 {
    if size == 0 {
        0
    } else {
        (u128::from(used) * 100 / u128::from(size)) as u64
    }
}

/// One warning line per node started with `-n`.
pub fn nosync_notes(ni: &NodeInfo) -> Vec<String> {
    let mut rows: Vec<_> = ni.nodes.iter().filter(|n| n.nosync).collect();
    rows.sort_by_key(|n| n.id);
    rows.into_iter()
        .map(|n| {
            format!(
                "Note: node {} runs with -n (nosync): writes are not durable",
                n.id
            )
        })
        .collect()
}

/// `dog node info`: per node (by id) and total Size (used + avail), Used, Avail and
/// Use% (rounded down), then the total virtual size of all VDIs, in Sheepdog's
/// tab-separated layout. Raw output prints bytes separated by spaces and leaves the
/// nosync notes to the caller (stderr).
pub fn format_node_info(ni: &NodeInfo, raw: bool) -> String {
    let size_str = |n: u64| if raw { n.to_string() } else { format_size(n) };
    let mut out = String::new();
    if !raw {
        out.push_str("Id\tSize\tUsed\tAvail\tUse%\n");
    }
    let mut rows: Vec<_> = ni.nodes.iter().collect();
    rows.sort_by_key(|n| n.id);
    let (mut total_used, mut total_avail) = (0u64, 0u64);
    for n in rows {
        let size = n.used.saturating_add(n.avail);
        let pct = percent(n.used, size);
        let (s, u, a) = (size_str(size), size_str(n.used), size_str(n.avail));
        if raw {
            writeln!(out, "{} {s} {u} {a} {pct}%", n.id).ok();
        } else {
            writeln!(out, "{:2}\t{s}\t{u}\t{a}\t{pct:3}%", n.id).ok();
        }
        total_used = total_used.saturating_add(n.used);
        total_avail = total_avail.saturating_add(n.avail);
    }
    let total = total_used.saturating_add(total_avail);
    let pct = percent(total_used, total);
    let (s, u, a, v) = (
        size_str(total),
        size_str(total_used),
        size_str(total_avail),
        size_str(ni.vdi_total),
    );
    if raw {
        writeln!(out, "Total {s} {u} {a} {pct}% {v}").ok();
    } else {
        writeln!(out, "Total\t{s}\t{u}\t{a}\t{pct:3}%").ok();
        writeln!(out, "\nTotal virtual image size\t{v}").ok();
        let notes = nosync_notes(ni);
        if !notes.is_empty() {
            out.push('\n');
            for n in notes {
                out.push_str(&n);
                out.push('\n');
            }
        }
    }
    out
}

/// Sheepdog's raw-mode escaping: a backslash before whitespace and backslashes, so a
/// line splits on spaces.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_whitespace() || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The header `dog vdi list` prints above its rows (not in raw mode).
pub const VDI_LIST_HEADER: &str =
    "  Name        Id    Size    Used  Shared    Creation time   VDI id  Copies  Tag\n";

/// `dog vdi list [NAME]`: Sheepdog's columns, ordered by VDI id as Sheepdog walks them.
/// The first column is ' ' for a working VDI and 's' for a snapshot; raw lines start
/// with '=' or 's' and carry bytes, unix seconds and the VDI id in hex.
pub fn format_vdi_list(vdis: &[VdiInfo], filter: Option<&str>, raw: bool, tz: TimeZone) -> String {
    let mut rows: Vec<&VdiInfo> = vdis
        .iter()
        .filter(|v| filter.is_none() || filter == Some(v.name.as_str()))
        .collect();
    rows.sort_by_key(|v| (v.vid, v.snap_id));
    let mut out = String::new();
    if !raw {
        out.push_str(VDI_LIST_HEADER);
    }
    for v in rows {
        let copies = v.redundancy.to_string();
        let line = if raw {
            format!(
                "{} {} {} {} {} {} {} {:06x} {} {}",
                if v.snap_id != 0 { 's' } else { '=' },
                escape(&v.name),
                v.snap_id,
                v.size,
                v.used,
                v.shared,
                v.ctime,
                v.vid,
                copies,
                escape(&v.tag),
            )
        } else {
            format!(
                "{} {:<8} {:5} {:>7} {:>7} {:>7} {}  {:7x} {:>6} {:>13}",
                if v.snap_id != 0 { 's' } else { ' ' },
                v.name,
                v.snap_id,
                format_size(v.size),
                format_size(v.used),
                format_size(v.shared),
                format_time(v.ctime, c"%Y-%m-%d %H:%M", tz),
                v.vid,
                copies,
                v.tag,
            )
        };
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Checks `[offset, offset + len)` against a VDI of `size` bytes and returns the length
/// to transfer: `len`, or everything from `offset` to the end when `len` is `None`.
pub fn span(name: &str, size: u64, offset: u64, len: Option<u64>) -> Result<u64, String> {
    if offset > size {
        return Err(format!(
            "offset {offset} is past the end of vdi '{name}' ({size} bytes)"
        ));
    }
    match len {
        None => Ok(size - offset),
        Some(len) if len <= size - offset => Ok(len),
        Some(len) => Err(format!(
            "{len} bytes at offset {offset} run past the end of vdi '{name}' ({size} bytes)"
        )),
    }
}

/// Splits `[offset, offset + len)` into pieces of at most `max` bytes that do not cross
/// a multiple of `max`, so each `VdiRead`/`VdiWrite` stays within one 4 MiB object.
pub fn chunks(offset: u64, len: u64, max: u32) -> impl Iterator<Item = (u64, u32)> {
    debug_assert!(max > 0);
    let max = u64::from(max.max(1));
    let end = offset.saturating_add(len);
    let mut at = offset;
    std::iter::from_fn(move || {
        if at >= end {
            return None;
        }
        let boundary = (at / max).saturating_add(1).saturating_mul(max);
        let next = boundary.min(end);
        let piece = (at, (next - at) as u32);
        at = next;
        Some(piece)
    })
}

/// An I/O error as one phrase, without Rust's "(os error N)" suffix.
pub fn io_message(e: &std::io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error ") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

/// Why `dog` could not connect, e.g. "cannot connect to 127.0.0.1:7000: Connection
/// refused (is sheep running?)".
pub fn connect_error(addr: &str, port: u16, e: &std::io::Error) -> String {
    let hint = if e.kind() == std::io::ErrorKind::ConnectionRefused {
        " (is sheep running?)"
    } else {
        ""
    };
    format!("cannot connect to {addr}:{port}: {}{hint}", io_message(e))
}

/// A failed exchange with a connected sheep, as one line.
pub fn exchange_error(addr: &str, port: u16, timeout_secs: u64, e: &AdminError) -> String {
    use std::io::ErrorKind;
    match e {
        AdminError::Io(io) if matches!(io.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
            format!("no answer from {addr}:{port} within {timeout_secs} s")
        }
        AdminError::Io(io) => format!("{addr}:{port}: {}", io_message(io)),
        other => format!("{addr}:{port}: {other}"),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use collie_net::admin::{ClusterFormatInfo, CopyInfo, EpochEntry, NodeStat};

    const G: u64 = 1 << 30;
    const M: u64 = 1 << 20;

    fn run(args: &[&str]) -> Invocation {
        match parse_args(args) {
            Ok(Parsed::Run(inv)) => inv,
            other => panic!("{args:?}: {other:?}"),
        }
    }

    fn cmd(args: &[&str]) -> Command {
        run(args).command
    }

    fn usage_error(args: &[&str]) -> UsageError {
        match parse_args(args) {
            Err(e) => e,
            Ok(p) => panic!("{args:?} parsed as {p:?}"),
        }
    }

    #[test]
    fn every_option_and_command_is_in_the_tables() {
        for opt in [
            Opt::Address,
            Opt::Port,
            Opt::Help,
            Opt::Copies,
            Opt::Force,
            Opt::Raw,
        ] {
            assert_eq!(opt_spec(opt).opt, opt);
        }
        for c in &COMMANDS {
            assert!(c.min_args <= c.max_args);
            let mut line = vec![c.group];
            line.extend(c.name.split(' '));
            // A valid value for each required placeholder.
            let args = c.args.split_whitespace().filter(|a| !a.starts_with('['));
            let filler = args.map(|a| match a {
                "NAME" => "n",
                "SIZE" => "1G",
                "ID" | "INDEX" => "0",
                "RATE" => "100M",
                other => panic!("no sample value for {other}"),
            });
            line.extend(filler);
            assert_eq!(line.len(), 1 + c.name.split(' ').count() + c.min_args);
            assert!(matches!(parse_args(&line), Ok(Parsed::Run(_))), "{line:?}");
        }
    }

    #[test]
    fn parses_commands_with_defaults() {
        let inv = run(&["cluster", "format"]);
        assert_eq!(inv.addr, "127.0.0.1");
        assert_eq!(inv.port, 7000);
        assert_eq!(
            inv.command,
            Command::ClusterFormat {
                redundancy: Redundancy::Replicated { copies: 3 },
                force: false
            }
        );
        assert_eq!(
            cmd(&["cluster", "info"]),
            Command::ClusterInfo { raw: false }
        );
        assert_eq!(cmd(&["cluster", "shutdown"]), Command::ClusterShutdown);
        assert_eq!(
            cmd(&["node", "info", "-r"]),
            Command::NodeInfo { raw: true }
        );
        assert_eq!(
            cmd(&["vdi", "create", "replica", "20G"]),
            Command::VdiCreate {
                name: "replica".into(),
                size: 20 * G,
                redundancy: None
            }
        );
        assert_eq!(
            cmd(&["vdi", "list"]),
            Command::VdiList {
                raw: false,
                name: None
            }
        );
        assert_eq!(
            cmd(&["vdi", "list", "--raw", "x"]),
            Command::VdiList {
                raw: true,
                name: Some("x".into())
            }
        );
        assert_eq!(
            cmd(&["vdi", "delete", "x"]),
            Command::VdiDelete { name: "x".into() }
        );
        assert_eq!(
            cmd(&["vdi", "resize", "x", "1T"]),
            Command::VdiResize {
                name: "x".into(),
                size: 1 << 40
            }
        );
        assert_eq!(
            cmd(&["vdi", "read", "x"]),
            Command::VdiRead {
                name: "x".into(),
                offset: 0,
                len: None
            }
        );
        assert_eq!(
            cmd(&["vdi", "read", "x", "4M", "1K"]),
            Command::VdiRead {
                name: "x".into(),
                offset: 4 * M,
                len: Some(1024)
            }
        );
        assert_eq!(
            cmd(&["vdi", "write", "x", "512"]),
            Command::VdiWrite {
                name: "x".into(),
                offset: 512,
                len: None
            }
        );
    }

    #[test]
    fn parses_node_and_object_commands() {
        assert_eq!(cmd(&["node", "list"]), Command::NodeList { raw: false });
        assert_eq!(
            cmd(&["-r", "node", "list"]),
            Command::NodeList { raw: true }
        );
        assert_eq!(cmd(&["node", "kill", "2"]), Command::NodeKill { id: 2 });
        assert_eq!(cmd(&["node", "kill", "007"]), Command::NodeKill { id: 7 });
        assert_eq!(
            cmd(&["vdi", "object", "location", "erasure", "3"]),
            Command::VdiObjectLocation {
                name: "erasure".into(),
                index: Some(3),
                raw: false
            }
        );
        // Options anywhere, even between the command's words.
        let inv = run(&[
            "vdi", "object", "-r", "location", "-p", "7003", "--", "-odd", "0",
        ]);
        assert_eq!(inv.port, 7003);
        assert_eq!(
            inv.command,
            Command::VdiObjectLocation {
                name: "-odd".into(),
                index: Some(0),
                raw: true
            }
        );
        // The command's words are consumed first: a VDI may be called "location".
        assert_eq!(
            cmd(&[
                "vdi",
                "object",
                "location",
                "location",
                "18446744073709551614"
            ]),
            Command::VdiObjectLocation {
                name: "location".into(),
                index: Some(u64::MAX - 1),
                raw: false
            }
        );
        // No index: the VDI's inode object.
        assert_eq!(
            cmd(&["vdi", "object", "location", "erasure"]),
            Command::VdiObjectLocation {
                name: "erasure".into(),
                index: None,
                raw: false
            }
        );
    }

    #[test]
    fn options_go_anywhere_in_any_spelling() {
        let inv = run(&[
            "-a", "10.0.0.2", "vdi", "create", "-c", "4:2", "erasure", "--port", "7001", "1G",
        ]);
        assert_eq!(inv.addr, "10.0.0.2");
        assert_eq!(inv.port, 7001);
        assert_eq!(
            inv.command,
            Command::VdiCreate {
                name: "erasure".into(),
                size: G,
                redundancy: Some(Redundancy::Erasure { data: 4, parity: 2 })
            }
        );
        let inv = run(&[
            "--address=host",
            "cluster",
            "format",
            "--copies=2",
            "-f",
            "-p7002",
        ]);
        assert_eq!(inv.addr, "host");
        assert_eq!(inv.port, 7002);
        assert_eq!(
            inv.command,
            Command::ClusterFormat {
                redundancy: Redundancy::Replicated { copies: 2 },
                force: true
            }
        );
        assert_eq!(
            cmd(&["cluster", "format", "-c1", "--force"]),
            Command::ClusterFormat {
                redundancy: Redundancy::Replicated { copies: 1 },
                force: true
            }
        );
        // `--` lets a name start with '-'.
        assert_eq!(
            cmd(&["vdi", "delete", "--", "-odd"]),
            Command::VdiDelete {
                name: "-odd".into()
            }
        );
    }

    #[test]
    fn help_wins_over_everything_else() {
        for line in [
            &["-h"][..],
            &["--help"],
            &["vdi", "list", "-h"],
            &["bogus", "-h"],
        ] {
            assert_eq!(parse_args(line), Ok(Parsed::Help), "{line:?}");
        }
        let help = help_text();
        assert!(
            help.contains("dog vdi create [-c N|D:P] NAME SIZE"),
            "{help}"
        );
        assert!(help.contains("-p, --port PORT"), "{help}");
    }

    #[test]
    fn rejects_bad_command_lines() {
        let cases: &[(&[&str], &str)] = &[
            (&[], "no command given"),
            (&["bogus"], "unknown command 'bogus'"),
            (&["vdi"], "'vdi' needs a subcommand"),
            (&["vdi", "frob"], "unknown command 'vdi frob'"),
            (&["vdi", "create", "x"], "'vdi create' needs more arguments"),
            (&["vdi", "create", "x", "1G", "y"], "too many arguments"),
            (&["cluster", "info", "extra"], "too many arguments"),
            (&["vdi", "create", "x", "1.5G"], "invalid size '1.5G'"),
            (&["vdi", "create", "x", "99999P"], "too large"),
            (&["vdi", "read", "x", "0", "1Q"], "invalid size '1Q'"),
            (&["vdi", "read", "x", "-1"], "unknown option '-1'"),
            (
                &["vdi", "list", "-c", "3"],
                "option -c/--copies does not apply",
            ),
            (
                &["vdi", "create", "-f", "x", "1G"],
                "-f/--force does not apply",
            ),
            (&["cluster", "format", "-c", "0"], "invalid -c '0'"),
            (&["cluster", "format", "-c", "3:1"], "invalid -c '3:1'"),
            (&["cluster", "format", "-c"], "needs a value"),
            (&["-p", "70000", "node", "info"], "invalid port '70000'"),
            (&["-p", "0", "node", "info"], "invalid port '0'"),
            (&["-p", "x", "node", "info"], "invalid port 'x'"),
            (&["-a", "", "node", "info"], "empty address"),
            (&["--raw=1", "node", "info"], "--raw takes no value"),
            (&["-rf", "node", "info"], "unknown option '-rf'"),
            (&["-x", "node", "info"], "unknown option '-x'"),
            (&["--bogus", "node", "info"], "unknown option '--bogus'"),
            (&["vdi", "delete", ""], "empty VDI name"),
            (&["node", "list", "x"], "too many arguments for 'node list'"),
            (&["node", "list", "-c", "2"], "-c/--copies does not apply"),
            (&["node", "kill"], "'node kill' needs more arguments"),
            (&["node", "kill", "1", "2"], "too many arguments"),
            (&["node", "kill", "-r", "1"], "-r/--raw does not apply"),
            (
                &["node", "kill", "x"],
                "invalid node id 'x': expected a whole number",
            ),
            (&["node", "kill", "+1"], "invalid node id '+1'"),
            (&["node", "kill", "1.0"], "invalid node id '1.0'"),
            (
                &["node", "kill", "4294967296"],
                "invalid node id '4294967296'",
            ),
            (&["node", "kill", "-1"], "unknown option '-1'"),
            (&["node", "frob"], "unknown command 'node frob'"),
            (&["vdi", "object"], "'vdi object' needs a subcommand"),
            (
                &["vdi", "object", "frob"],
                "unknown command 'vdi object frob'",
            ),
            (
                &["vdi", "object", "location"],
                "'vdi object location' needs more arguments",
            ),
            (
                &["vdi", "object", "location", "x", "18446744073709551615"],
                "past the end of any VDI",
            ),
            (
                &["vdi", "object", "location", "x", "1", "2"],
                "too many arguments for 'vdi object location': '2'",
            ),
            (
                &["vdi", "object", "location", "x", "4M"],
                "invalid object index '4M'",
            ),
            (&["vdi", "object", "location", "", "0"], "empty VDI name"),
            (
                &["vdi", "object", "location", "-c", "3", "x", "0"],
                "-c/--copies does not apply to 'vdi object location'",
            ),
            (
                &["vdi", "location", "x", "0"],
                "unknown command 'vdi location'",
            ),
        ];
        for (line, want) in cases {
            let e = usage_error(line);
            assert!(e.message.contains(want), "{line:?}: {e:?}");
            assert!(e.usage.starts_with("usage:"), "{line:?}: {e:?}");
        }
        let long = "n".repeat(MAX_NAME + 1);
        let e = usage_error(&["vdi", "create", &long, "1G"]);
        assert!(e.message.contains("longer than"), "{e:?}");
        assert!(run(&["vdi", "create", &long[1..], "1G"]).addr == DEFAULT_ADDR);
    }

    #[test]
    fn usage_names_the_failing_command_or_group() {
        let e = usage_error(&["vdi", "create", "x"]);
        assert_eq!(e.usage, "usage: dog vdi create [-c N|D:P] NAME SIZE\n");
        let e = usage_error(&["cluster", "frob"]);
        assert_eq!(
            e.usage,
            "usage:\n  dog cluster format [-c N|D:P] [-f]\n  dog cluster info [-r]\n  \
             dog cluster shutdown\n  dog cluster check [-r]\n  dog cluster recover info [-r]\n  \
             dog cluster recover enable\n  dog cluster recover disable\n  \
             dog cluster recover rate RATE\nrun 'dog -h' for options\n"
        );
        assert!(usage_error(&[])
            .usage
            .contains("dog vdi write NAME [OFFSET [LEN]]"));
        let e = usage_error(&["node"]);
        assert_eq!(
            e.usage,
            "usage:\n  dog node list [-r]\n  dog node info [-r]\n  dog node recovery [-r]\n  \
             dog node kill ID\nrun 'dog -h' for options\n"
        );
        let e = usage_error(&["node", "kill", "x"]);
        assert_eq!(e.usage, "usage: dog node kill ID\n");
        let e = usage_error(&["vdi", "object", "location"]);
        assert_eq!(
            e.usage,
            "usage: dog vdi object location [-r] NAME [INDEX]\n"
        );
        let e = usage_error(&["vdi", "object"]);
        assert!(
            e.usage
                .contains("  dog vdi object location [-r] NAME [INDEX]\n"),
            "{e:?}"
        );
        let help = help_text();
        for line in [
            "dog node list [-r]",
            "dog node kill ID",
            "dog vdi object location [-r] NAME [INDEX]",
        ] {
            assert!(help.contains(line), "{line}: {help}");
        }
    }

    fn vdi(name: &str, vid: u32, size: u64, used: u64, snap_id: u32, r: &str) -> VdiInfo {
        VdiInfo {
            name: name.into(),
            vid,
            size,
            used,
            shared: 0,
            ctime: 1_369_651_831, // 2013-05-27 10:50:31 UTC
            redundancy: r.parse().unwrap(),
            snap_id,
            tag: String::new(),
        }
    }

    #[test]
    fn vdi_list_matches_sheepdog_columns() {
        let mut tagged = vdi("erasure", 0x0f_d2c3, 5 * G, 864 * M, 1, "4:2");
        tagged.tag = "before-upgrade".into();
        let list = [
            vdi("replica", 0x72_a1e2, 20 * G, 0, 0, "3"),
            tagged,
            vdi("erasure", 0x0f_d2c4, 5 * G, 4 * M, 0, "4:2"),
        ];
        // A leading `\` would eat the header's indent, so the header is spelled apart.
        let header =
            "  Name        Id    Size    Used  Shared    Creation time   VDI id  Copies  Tag\n";
        assert_eq!(VDI_LIST_HEADER, header);
        let rows = "\
s erasure      1  5.0 GB  864 MB  0.0 MB 2013-05-27 10:50    fd2c3    4:2 before-upgrade
  erasure      0  5.0 GB  4.0 MB  0.0 MB 2013-05-27 10:50    fd2c4    4:2
  replica      0   20 GB  0.0 MB  0.0 MB 2013-05-27 10:50   72a1e2      3
";
        assert_eq!(
            format_vdi_list(&list, None, false, TimeZone::Utc),
            format!("{header}{rows}")
        );

        let want_raw = "\
s erasure 1 5368709120 905969664 0 1369651831 0fd2c3 4:2 before-upgrade
= erasure 0 5368709120 4194304 0 1369651831 0fd2c4 4:2
";
        assert_eq!(
            format_vdi_list(&list, Some("erasure"), true, TimeZone::Utc),
            want_raw
        );
        assert_eq!(
            format_vdi_list(&list, Some("nope"), false, TimeZone::Utc),
            VDI_LIST_HEADER
        );
        let odd = [vdi("a b\\c", 1, 0, 0, 0, "1")];
        assert_eq!(
            format_vdi_list(&odd, None, true, TimeZone::Utc),
            "= a\\ b\\\\c 0 0 0 0 1369651831 000001 1\n"
        );
    }

    fn node(id: u32, used: u64, avail: u64, nosync: bool) -> NodeStat {
        NodeStat {
            id,
            addr: format!("127.0.0.1:{}", 7000 + id),
            zone: id,
            used,
            avail,
            nosync,
        }
    }

    #[test]
    fn node_info_matches_sheepdog_layout() {
        let ni = NodeInfo {
            nodes: vec![node(0, 13 * G, 51 * G, false)],
            vdi_total: 20 * G,
        };
        let want = "\
Id\tSize\tUsed\tAvail\tUse%
 0\t64 GB\t13 GB\t51 GB\t 20%
Total\t64 GB\t13 GB\t51 GB\t 20%

Total virtual image size\t20 GB
";
        assert_eq!(format_node_info(&ni, false), want);
        assert_eq!(
            format_node_info(&ni, true),
            "0 68719476736 13958643712 54760833024 20%\n\
             Total 68719476736 13958643712 54760833024 20% 21474836480\n"
        );
        assert!(nosync_notes(&ni).is_empty());
    }

    #[test]
    fn node_info_totals_and_nosync_notes() {
        let ni = NodeInfo {
            nodes: vec![node(0, 0, 10 * G, true), node(1, 10 * G, 0, false)],
            vdi_total: 0,
        };
        let want = "\
Id\tSize\tUsed\tAvail\tUse%
 0\t10 GB\t0.0 MB\t10 GB\t  0%
 1\t10 GB\t10 GB\t0.0 MB\t100%
Total\t20 GB\t10 GB\t10 GB\t 50%

Total virtual image size\t0.0 MB

Note: node 0 runs with -n (nosync): writes are not durable
";
        assert_eq!(format_node_info(&ni, false), want);
        // Raw output stays parseable; the caller prints the notes on stderr.
        assert!(!format_node_info(&ni, true).contains("Note"));
        assert_eq!(nosync_notes(&ni).len(), 1);
        let empty = NodeInfo {
            nodes: vec![],
            vdi_total: 0,
        };
        assert!(format_node_info(&empty, false).contains("Total\t0.0 MB\t0.0 MB\t0.0 MB\t  0%"));
    }

    #[test]
    fn node_info_for_three_nodes_sums_and_rounds_down() {
        // Rows come out by id whatever order the sheep sends them in.
        let ni = NodeInfo {
            nodes: vec![
                node(2, 3 * G, 7 * G, false),
                node(0, G, 2 * G, false),
                node(1, 0, 5 * G, false),
            ],
            vdi_total: 40 * G + 512 * M,
        };
        // Use%: 1/3 -> 33, 0/5 -> 0, 3/10 -> 30; total 4/18 -> 22 (rounded down).
        let want = "\
Id\tSize\tUsed\tAvail\tUse%
 0\t3.0 GB\t1.0 GB\t2.0 GB\t 33%
 1\t5.0 GB\t0.0 MB\t5.0 GB\t  0%
 2\t10 GB\t3.0 GB\t7.0 GB\t 30%
Total\t18 GB\t4.0 GB\t14 GB\t 22%

Total virtual image size\t40 GB
";
        assert_eq!(format_node_info(&ni, false), want);
        let want_raw = "\
0 3221225472 1073741824 2147483648 33%
1 5368709120 0 5368709120 0%
2 10737418240 3221225472 7516192768 30%
Total 19327352832 4294967296 15032385536 22% 43486543872
";
        assert_eq!(format_node_info(&ni, true), want_raw);
    }

    fn entry(id: u32, addr: &str, zone: u32, vnodes: u32) -> NodeEntry {
        NodeEntry {
            id,
            addr: addr.into(),
            zone,
            vnodes,
            nbd_port: 10809 + id as u16,
        }
    }

    #[test]
    fn node_list_matches_sheepdog_columns() {
        let nodes = [
            entry(10, "192.168.100.100:7010", 3, 52),
            entry(0, "127.0.0.1:7000", 0, 4096),
            entry(1, "127.0.0.1:7001", 4_000_000_000, 4100),
        ];
        let header = "  Id   Host:Port         V-Nodes       Zone\n";
        assert_eq!(NODE_LIST_HEADER, header);
        let rows = "   0   127.0.0.1:7000      \t4096          0
   1   127.0.0.1:7001      \t4100 4000000000
  10   192.168.100.100:7010\t52          3
";
        assert_eq!(format_node_list(&nodes, false), format!("{header}{rows}"));
        let want_raw = "\
0 127.0.0.1:7000 4096 0 10809
1 127.0.0.1:7001 4100 4000000000 10810
10 192.168.100.100:7010 52 3 10819
";
        assert_eq!(format_node_list(&nodes, true), want_raw);
        assert_eq!(format_node_list(&[], false), NODE_LIST_HEADER);
        assert_eq!(format_node_list(&[], true), "");
    }

    fn copy(addr: &str, zone: u32, used: u64, crc: u32) -> CopyInfo {
        CopyInfo {
            addr: addr.into(),
            zone,
            used,
            crc,
        }
    }

    #[test]
    fn object_location_marks_missing_and_misplaced_copies() {
        let loc = ObjectLocation {
            oid: 0x0072_a1e2_0000_0001,
            redundancy: Redundancy::Replicated { copies: 3 },
            targets: vec![
                "127.0.0.1:7000".into(),
                "127.0.0.1:7002".into(),
                "127.0.0.1:7001".into(),
            ],
            copies: vec![
                copy("127.0.0.1:7003", 3, 4096, 0xdead_beef),
                copy("127.0.0.1:7001", 1, 4 * M, 0xbeef),
                copy("127.0.0.1:7000", 0, 4 * M, 0xbeef),
            ],
        };
        let want = "\
Looking for the object 0x0072a1e200000001 (vid 0x72a1e2 idx 1, 3 copies) with 4 nodes

  127.0.0.1:7000 has the object
  127.0.0.1:7002 should have the object but doesn't
  127.0.0.1:7001 has the object
  127.0.0.1:7003 has a misplaced copy
";
        assert_eq!(format_object_location(&loc, 4, false), want);
        // Targets first in placement order, then the misplaced copies.
        let want_raw = "\
127.0.0.1:7000 0 4194304 0000beef target
127.0.0.1:7001 1 4194304 0000beef target
127.0.0.1:7003 3 4096 deadbeef misplaced
";
        assert_eq!(format_object_location(&loc, 4, true), want_raw);
    }

    #[test]
    fn object_location_of_erasure_and_unwritten_objects() {
        let targets: Vec<String> = (0..6).map(|i| format!("127.0.0.1:{}", 7000 + i)).collect();
        let copies = targets
            .iter()
            .enumerate()
            .map(|(i, t)| copy(t, i as u32, M, i as u32))
            .collect();
        let loc = ObjectLocation {
            oid: 0x000f_d2c4_0000_0400,
            redundancy: Redundancy::Erasure { data: 4, parity: 2 },
            targets,
            copies,
        };
        let text = format_object_location(&loc, 6, false);
        assert!(
            text.starts_with(
                "Looking for the object 0x000fd2c400000400 (vid 0xfd2c4 idx 1024, \
                 4:2 fragments) with 6 nodes\n\n  127.0.0.1:7000 has the object\n"
            ),
            "{text}"
        );
        assert_eq!(text.lines().count(), 8, "{text}");
        let raw = format_object_location(&loc, 6, true);
        assert_eq!(raw.lines().count(), 6, "{raw}");
        assert!(raw.ends_with("127.0.0.1:7005 5 1048576 00000005 target\n"));

        let unwritten = ObjectLocation {
            copies: vec![],
            ..loc
        };
        assert_eq!(
            format_object_location(&unwritten, 6, false),
            "object 0x000fd2c400000400 is not written yet (reads as zeros)\n"
        );
        assert_eq!(format_object_location(&unwritten, 6, true), "");
    }

    #[test]
    fn cluster_info_says_which_nodes_it_waits_for() {
        let ci = ClusterInfo {
            formatted: Some(ClusterFormatInfo {
                ctime: 1_369_651_831,
                default_redundancy: Redundancy::Erasure { data: 2, parity: 1 },
                vnode_bytes: 1 << 20,
            }),
            waiting_for: vec!["127.0.0.1:7001".into(), "127.0.0.1:7002".into()],
            epochs: vec![EpochEntry {
                epoch: 6,
                time: 1_369_651_900,
                nodes: vec![
                    "127.0.0.1:7000".into(),
                    "127.0.0.1:7001".into(),
                    "127.0.0.1:7002".into(),
                ],
            }],
            recovery: vec![],
        };
        let want = "\
Cluster status: Waiting for other nodes to join cluster
Waiting for nodes: 127.0.0.1:7001, 127.0.0.1:7002
Cluster default redundancy: 2:1

Cluster created at Mon May 27 10:50:31 2013

Epoch Time           Version [Host:Port:V-Nodes,,,]
2013-05-27 10:51:40      6 [127.0.0.1:7000:4096, 127.0.0.1:7001:4096, 127.0.0.1:7002:4096]
";
        assert_eq!(format_cluster_info(&ci, false, TimeZone::Utc), want);
        let want_raw = "\
Waiting for other nodes to join cluster
waiting 127.0.0.1:7001
waiting 127.0.0.1:7002
1369651900 6 [127.0.0.1:7000:4096, 127.0.0.1:7001:4096, 127.0.0.1:7002:4096]
";
        assert_eq!(format_cluster_info(&ci, true, TimeZone::Utc), want_raw);

        // Waiting for members before the format record is known: no format text.
        let bare = ClusterInfo {
            formatted: None,
            waiting_for: vec!["127.0.0.1:7001".into()],
            epochs: vec![],
            recovery: vec![],
        };
        assert_eq!(
            format_cluster_info(&bare, false, TimeZone::Utc),
            "Cluster status: Waiting for other nodes to join cluster\n\
             Waiting for nodes: 127.0.0.1:7001\n"
        );
        assert_eq!(
            format_cluster_info(&bare, true, TimeZone::Utc),
            "Waiting for other nodes to join cluster\nwaiting 127.0.0.1:7001\n"
        );
    }

    #[test]
    fn cluster_info_matches_sheepdog_layout() {
        let ci = ClusterInfo {
            formatted: Some(ClusterFormatInfo {
                ctime: 1_369_651_831,
                default_redundancy: Redundancy::Replicated { copies: 3 },
                vnode_bytes: 1 << 20,
            }),
            waiting_for: vec![],
            epochs: vec![
                EpochEntry {
                    epoch: 1,
                    time: 1_369_651_831,
                    nodes: vec!["127.0.0.1:7000".into()],
                },
                EpochEntry {
                    epoch: 2,
                    time: 1_369_651_900,
                    nodes: vec!["127.0.0.1:7000".into(), "127.0.0.1:7001".into()],
                },
            ],
            recovery: vec![
                member(1, Ok(stat(2, true, true))),
                member(0, Ok(stat(2, true, true))),
            ],
        };
        let want = "\
Cluster status: running
Cluster default redundancy: 3
Cluster recovery: enabled, complete

Cluster created at Mon May 27 10:50:31 2013

Epoch Time           Version [Host:Port:V-Nodes,,,]
2013-05-27 10:51:40      2 [127.0.0.1:7000:4096, 127.0.0.1:7001:4096]
2013-05-27 10:50:31      1 [127.0.0.1:7000:4096]
";
        assert_eq!(format_cluster_info(&ci, false, TimeZone::Utc), want);
        let want_raw = "\
running
1369651900 2 [127.0.0.1:7000:4096, 127.0.0.1:7001:4096]
1369651831 1 [127.0.0.1:7000:4096]
";
        assert_eq!(format_cluster_info(&ci, true, TimeZone::Utc), want_raw);

        let unformatted = ClusterInfo {
            formatted: None,
            waiting_for: vec![],
            epochs: vec![],
            recovery: vec![],
        };
        assert_eq!(
            format_cluster_info(&unformatted, false, TimeZone::Utc),
            "Cluster status: Waiting for cluster to be formatted\n"
        );
        assert_eq!(
            format_cluster_info(&unformatted, true, TimeZone::Utc),
            "Waiting for cluster to be formatted\n"
        );
    }

    fn stat(epoch: u32, complete: bool, enabled: bool) -> RecoveryStat {
        RecoveryStat {
            epoch,
            complete,
            objects_total: 0,
            objects_done: 0,
            bytes: 0,
            enabled,
            rate: 0,
            objects_lost: 0,
        }
    }

    fn member(id: u32, stat: Result<RecoveryStat, &str>) -> MemberRecovery {
        MemberRecovery {
            id,
            addr: format!("127.0.0.1:{}", 7000 + id),
            stat: stat.map_err(str::to_string),
        }
    }

    #[test]
    fn parses_recovery_commands() {
        assert_eq!(
            cmd(&["node", "recovery"]),
            Command::NodeRecovery { raw: false }
        );
        assert_eq!(
            cmd(&["node", "recovery", "-r"]),
            Command::NodeRecovery { raw: true }
        );
        assert_eq!(
            cmd(&["cluster", "recover", "info", "--raw"]),
            Command::ClusterRecoverInfo { raw: true }
        );
        assert_eq!(
            cmd(&["cluster", "recover", "enable"]),
            Command::ClusterRecover {
                enabled: Some(true),
                rate: None
            }
        );
        assert_eq!(
            cmd(&["-p", "7001", "cluster", "recover", "disable"]),
            Command::ClusterRecover {
                enabled: Some(false),
                rate: None
            }
        );
        for (arg, want) in [("100M", 100 * M), ("0", 0), ("4096", 4096), ("1g", G)] {
            assert_eq!(
                cmd(&["cluster", "recover", "rate", arg]),
                Command::ClusterRecover {
                    enabled: None,
                    rate: Some(want)
                },
                "{arg}"
            );
        }
        let cases: &[(&[&str], &str)] = &[
            (
                &["cluster", "recover"],
                "'cluster recover' needs a subcommand",
            ),
            (
                &["cluster", "recover", "pause"],
                "unknown command 'cluster recover pause'",
            ),
            (
                &["cluster", "recover", "rate"],
                "'cluster recover rate' needs more arguments",
            ),
            (
                &["cluster", "recover", "rate", "fast"],
                "invalid rate 'fast'",
            ),
            (
                &["cluster", "recover", "rate", "1.5M"],
                "invalid rate '1.5M'",
            ),
            (&["cluster", "recover", "rate", "-1"], "unknown option '-1'"),
            (
                &["cluster", "recover", "rate", "1M", "2M"],
                "too many arguments for 'cluster recover rate': '2M'",
            ),
            (
                &["cluster", "recover", "enable", "now"],
                "too many arguments",
            ),
            (
                &["cluster", "recover", "disable", "-r"],
                "-r/--raw does not apply to 'cluster recover disable'",
            ),
            (&["node", "recovery", "0"], "too many arguments"),
            (&["node", "recovery", "-f"], "-f/--force does not apply"),
        ];
        for (line, want) in cases {
            let e = usage_error(line);
            assert!(e.message.contains(want), "{line:?}: {e:?}");
            assert!(e.usage.starts_with("usage:"), "{line:?}: {e:?}");
        }
        let e = usage_error(&["cluster", "recover", "rate", "x"]);
        assert!(e.message.contains("0 is no limit"), "{e:?}");
        assert_eq!(e.usage, "usage: dog cluster recover rate RATE\n");
        let e = usage_error(&["cluster", "recover"]);
        assert!(e.usage.contains("  dog cluster recover enable\n"), "{e:?}");
        let help = help_text();
        for line in [
            "dog node recovery [-r]",
            "dog cluster recover info [-r]",
            "dog cluster recover enable",
            "dog cluster recover disable",
            "dog cluster recover rate RATE",
            "RATE is bytes per second",
        ] {
            assert!(help.contains(line), "{line}: {help}");
        }
    }

    #[test]
    fn node_recovery_shows_state_progress_and_silent_nodes() {
        let running = RecoveryStat {
            objects_total: 20_000,
            objects_done: 12_345,
            bytes: 4 * G,
            ..stat(7, false, true)
        };
        let paused = RecoveryStat {
            objects_total: 3,
            objects_done: 0,
            ..stat(7, false, false)
        };
        let done = RecoveryStat {
            objects_total: 10,
            objects_done: 10,
            bytes: 40 * M,
            objects_lost: 2,
            ..stat(7, true, true)
        };
        let list = [
            member(2, Err("no answer within 2 s")),
            member(1, Ok(paused)),
            member(0, Ok(running)),
            member(3, Ok(done)),
        ];
        let header =
            "  Id   Host:Port             Epoch  State             Objects  Progress    Bytes\n";
        assert_eq!(NODE_RECOVERY_HEADER, header);
        let rows =
            "   0   127.0.0.1:7000            7  running       12345/20000     61.7%   4.0 GB
   1   127.0.0.1:7001            7  paused                0/3      0.0%   0.0 MB
   2   127.0.0.1:7002            -  unknown                 -         -        -
   3   127.0.0.1:7003            7  complete            10/10    100.0%    40 MB

Note: node 2 (127.0.0.1:7002) did not answer: no answer within 2 s
Note: node 3 (127.0.0.1:7003) could not recover 2 objects: too few copies or fragments are left (dog cluster check lists what cannot be read)
";
        assert_eq!(
            format_node_recovery(&list, false),
            format!("{header}{rows}")
        );
        let want_raw = "\
0 127.0.0.1:7000 7 running 12345 20000 4294967296 0
1 127.0.0.1:7001 7 paused 0 3 0 0
2 127.0.0.1:7002 - unknown - - - -
3 127.0.0.1:7003 7 complete 10 10 41943040 2
";
        assert_eq!(format_node_recovery(&list, true), want_raw);
        assert_eq!(recovery_notes(&list).len(), 2);
        assert_eq!(format_node_recovery(&[], false), NODE_RECOVERY_HEADER);
        assert_eq!(format_node_recovery(&[], true), "");
    }

    #[test]
    fn recovery_progress_rounds_down_and_never_passes_100() {
        let at = |done, total, complete| {
            recovery_progress(&RecoveryStat {
                objects_done: done,
                objects_total: total,
                ..stat(1, complete, true)
            })
        };
        assert_eq!(at(0, 0, false), "0.0%");
        assert_eq!(at(0, 0, true), "100.0%");
        assert_eq!(at(1, 3, false), "33.3%");
        assert_eq!(at(2, 3, false), "66.6%");
        assert_eq!(at(999, 1000, false), "99.9%");
        assert_eq!(at(5, 3, false), "100.0%");
        assert_eq!(at(u64::MAX - 1, u64::MAX, false), "99.9%");
        // Complete is complete, whatever the counters say.
        assert_eq!(at(1, 3, true), "100.0%");
    }

    #[test]
    fn recover_info_shows_switch_and_rate() {
        let list = [
            member(
                1,
                Ok(RecoveryStat {
                    rate: 100 * M,
                    ..stat(3, true, false)
                }),
            ),
            member(0, Ok(stat(3, true, true))),
            member(2, Err("Connection refused")),
        ];
        let header = "  Id   Host:Port            Recovery  Max rate\n";
        assert_eq!(RECOVER_INFO_HEADER, header);
        let rows = "   0   127.0.0.1:7000       enabled   unlimited
   1   127.0.0.1:7001       disabled  100 MB/s
   2   127.0.0.1:7002       unknown   -

Note: node 2 (127.0.0.1:7002) did not answer: Connection refused
";
        assert_eq!(format_recover_info(&list, false), format!("{header}{rows}"));
        let want_raw = "\
0 127.0.0.1:7000 enabled 0
1 127.0.0.1:7001 disabled 104857600
2 127.0.0.1:7002 unknown -
";
        assert_eq!(format_recover_info(&list, true), want_raw);
    }

    #[test]
    fn rates_print_in_the_table_units() {
        let cases = [
            (0, "unlimited"),
            (1, "1 B/s"),
            (1023, "1023 B/s"),
            (1024, "1.0 KB/s"),
            (1536, "1.5 KB/s"),
            (512 * 1024, "512 KB/s"),
            (M, "1.0 MB/s"),
            (100 * M, "100 MB/s"),
            (G, "1.0 GB/s"),
        ];
        for (n, want) in cases {
            assert_eq!(format_rate(n), want, "{n}");
        }
        assert_eq!(
            recover_done(Some(true), None),
            "Cluster recovery: enabled\n"
        );
        assert!(recover_done(Some(false), None).starts_with("Cluster recovery: disabled"));
        assert_eq!(
            recover_done(None, Some(100 * M)),
            "Cluster recovery rate: 100 MB/s\n"
        );
        assert_eq!(
            recover_done(None, Some(0)),
            "Cluster recovery rate: unlimited\n"
        );
    }

    #[test]
    fn recovery_summary_for_cluster_info() {
        let s = |list: &[MemberRecovery]| recovery_summary(list);
        assert_eq!(s(&[]), None);
        let all_done = [
            member(0, Ok(stat(4, true, true))),
            member(1, Ok(stat(4, true, true))),
        ];
        assert_eq!(s(&all_done).as_deref(), Some("enabled, complete"));
        let one_running = [
            member(0, Ok(stat(4, true, true))),
            member(1, Ok(stat(4, false, true))),
        ];
        assert_eq!(s(&one_running).as_deref(), Some("enabled, running"));
        let paused = [
            member(0, Ok(stat(4, false, false))),
            member(1, Ok(stat(4, true, false))),
        ];
        assert_eq!(s(&paused).as_deref(), Some("disabled, paused"));
        let disabled_done = [member(0, Ok(stat(4, true, false)))];
        assert_eq!(s(&disabled_done).as_deref(), Some("disabled, complete"));
        let lost = [
            member(0, Ok(stat(4, true, true))),
            member(
                1,
                Ok(RecoveryStat {
                    objects_lost: 5,
                    ..stat(4, true, true)
                }),
            ),
        ];
        assert_eq!(
            s(&lost).as_deref(),
            Some("enabled, complete, objects lost on 1 of 2 nodes")
        );
        // A node restarted since 'recover disable' comes back enabled: say so.
        let mixed = [
            member(0, Ok(stat(4, false, false))),
            member(1, Ok(stat(4, false, true))),
            member(2, Ok(stat(4, true, false))),
        ];
        assert_eq!(
            s(&mixed).as_deref(),
            Some("enabled on 1 of 3 nodes, running")
        );
        let silent = [
            member(0, Ok(stat(4, true, true))),
            member(1, Err("refused")),
            member(2, Err("timed out")),
        ];
        assert_eq!(
            s(&silent).as_deref(),
            Some("enabled, complete (no answer from 127.0.0.1:7001, 127.0.0.1:7002)")
        );
        assert_eq!(
            s(&silent[1..]).as_deref(),
            Some("unknown (no answer from 127.0.0.1:7001, 127.0.0.1:7002)")
        );

        // In cluster info, after the redundancy; raw output is unchanged.
        let ci = ClusterInfo {
            formatted: Some(ClusterFormatInfo {
                ctime: 1_369_651_831,
                default_redundancy: Redundancy::Replicated { copies: 2 },
                vnode_bytes: 1 << 20,
            }),
            waiting_for: vec![],
            epochs: vec![],
            recovery: silent.to_vec(),
        };
        let text = format_cluster_info(&ci, false, TimeZone::Utc);
        assert!(
            text.starts_with(
                "Cluster status: running\nCluster default redundancy: 2\n\
                 Cluster recovery: enabled, complete (no answer from 127.0.0.1:7001, \
                 127.0.0.1:7002)\n\nCluster created at "
            ),
            "{text}"
        );
        assert_eq!(format_cluster_info(&ci, true, TimeZone::Utc), "running\n");
    }

    #[test]
    fn times_format_in_the_asked_zone() {
        assert_eq!(
            format_time(0, c"%Y-%m-%d %H:%M:%S", TimeZone::Utc),
            "1970-01-01 00:00:00"
        );
        // Day of month is space-padded, as ctime(3) prints it.
        assert_eq!(
            format_time(86_400 * 4, c"%a %b %e %H:%M:%S %Y", TimeZone::Utc),
            "Mon Jan  5 00:00:00 1970"
        );
        assert_eq!(
            format_time(u64::MAX, c"%Y", TimeZone::Utc),
            u64::MAX.to_string()
        );
        assert!(!format_time(0, c"%Y", TimeZone::Local).is_empty());
    }

    #[test]
    fn spans_are_checked_against_the_vdi_size() {
        assert_eq!(span("x", 100, 0, None), Ok(100));
        assert_eq!(span("x", 100, 40, None), Ok(60));
        assert_eq!(span("x", 100, 100, None), Ok(0));
        assert_eq!(span("x", 100, 40, Some(60)), Ok(60));
        assert_eq!(span("x", 100, 0, Some(0)), Ok(0));
        assert!(span("x", 100, 101, None)
            .unwrap_err()
            .contains("past the end"));
        assert!(span("x", 100, 41, Some(60))
            .unwrap_err()
            .contains("run past the end"));
        assert!(span("x", 100, 1, Some(u64::MAX)).is_err());
    }

    #[test]
    fn chunks_stay_within_one_object() {
        let max = 4 << 20;
        let c: Vec<_> = chunks(0, 10 << 20, max).collect();
        assert_eq!(c, vec![(0, max), (4 << 20, max), (8 << 20, 2 << 20)]);
        let c: Vec<_> = chunks((4 << 20) - 10, 30, max).collect();
        assert_eq!(c, vec![((4 << 20) - 10, 10), (4 << 20, 20)]);
        assert_eq!(chunks(7, 0, max).count(), 0);
        let c: Vec<_> = chunks(u64::MAX - 5, 100, max).collect();
        assert_eq!(c, vec![(u64::MAX - 5, 5)]);
        // Every byte exactly once, in order.
        let (mut at, total) = (12_345u64, 13u64 << 20);
        for (off, n) in chunks(at, total, max) {
            assert_eq!(off, at);
            assert!(n > 0 && n <= max);
            assert_eq!(
                off / u64::from(max),
                (off + u64::from(n) - 1) / u64::from(max)
            );
            at += u64::from(n);
        }
        assert_eq!(at, 12_345 + total);
    }

    #[test]
    fn error_lines_are_short_and_helpful() {
        use std::io::{Error, ErrorKind};
        let refused = Error::from_raw_os_error(libc::ECONNREFUSED);
        assert_eq!(
            connect_error("127.0.0.1", 7000, &refused),
            "cannot connect to 127.0.0.1:7000: Connection refused (is sheep running?)"
        );
        let timeout = AdminError::Io(Error::from(ErrorKind::WouldBlock));
        assert_eq!(
            exchange_error("h", 7000, 30, &timeout),
            "no answer from h:7000 within 30 s"
        );
        let reset = AdminError::Io(Error::from_raw_os_error(libc::ECONNRESET));
        assert_eq!(
            exchange_error("h", 7000, 30, &reset),
            "h:7000: Connection reset by peer"
        );
        let magic = AdminError::BadMagic(0x1234);
        assert!(exchange_error("h", 7000, 30, &magic).starts_with("h:7000: not a collie"));
    }

    #[test]
    fn check_reports_count_objects_for_replicated_vdis() {
        let r = CheckReport {
            objects: 24,
            stripes: 0,
            consistent: 23,
            repaired: 1,
            lost: 0,
            unplaced: 0,
        };
        assert_eq!(
            format_check("vm", &r, false),
            "vm: 24 objects: 23 consistent, 1 repaired, 0 lost\n"
        );
        assert_eq!(format_check("vm", &r, true), "24 0 23 1 0 0\n");
        let ec = CheckReport {
            stripes: 24 * 256,
            consistent: 24 * 256,
            repaired: 0,
            ..r
        };
        assert!(format_check("ec", &ec, false)
            .starts_with("ec: 24 objects, 6144 stripes: 6144 consistent"));
    }
}
