//! dog: the admin client, following Sheepdog's command tree (`dog cluster format`,
//! `dog vdi list`, ...). It parses its command line (collie_tools::dogcli), sends admin
//! requests to one sheep and prints the answers. A bad command line exits 2; any other
//! failure prints one `dog: ...` line on stderr and exits 1.
//!
//! Must not use collie-engine: dog speaks only the admin protocol (net + placement).

use std::io::{self, Read, Write};
use std::process::ExitCode;
use std::time::Duration;

use collie_net::admin::{
    AdminClient, CheckReport, MemberRecovery, NodeEntry, NodeInfo, Request, Response, VdiInfo,
    MAX_DATA,
};
use collie_tools::dogcli::{self, Command, Invocation, Parsed, TimeZone, EXIT_FAILURE, EXIT_USAGE};

/// Bounds the connect and every reply; one 4 MiB read or write fits well inside it.
const TIMEOUT: Duration = Duration::from_secs(30);

/// Why a command failed.
enum Fail {
    /// Printed as `dog: MESSAGE`.
    Msg(String),
    /// stdout was closed by its reader (`dog vdi read x | head`): exit 1 quietly.
    Quiet,
}

impl From<String> for Fail {
    fn from(m: String) -> Fail {
        Fail::Msg(m)
    }
}

type Result<T> = std::result::Result<T, Fail>;

fn main() -> ExitCode {
    let mut args = Vec::new();
    for a in std::env::args_os().skip(1) {
        match a.into_string() {
            Ok(s) => args.push(s),
            Err(a) => {
                eprintln!("dog: argument {a:?} is not valid UTF-8");
                return ExitCode::from(EXIT_USAGE);
            }
        }
    }
    let inv = match dogcli::parse_args(&args) {
        Ok(Parsed::Run(inv)) => inv,
        Ok(Parsed::Help) => {
            return match write_stdout(dogcli::help_text().as_bytes()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(_) => ExitCode::from(EXIT_FAILURE),
            };
        }
        Err(e) => {
            eprint!("dog: {}\n{}", e.message, e.usage);
            return ExitCode::from(EXIT_USAGE);
        }
    };
    match run(&inv) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Fail::Msg(m)) => {
            eprintln!("dog: {m}");
            ExitCode::from(EXIT_FAILURE)
        }
        Err(Fail::Quiet) => ExitCode::from(EXIT_FAILURE),
    }
}

/// One connection to one sheep.
struct Session {
    client: AdminClient,
    addr: String,
    port: u16,
}

impl Session {
    fn connect(inv: &Invocation) -> Result<Session> {
        let client = AdminClient::connect(&inv.addr, inv.port, TIMEOUT)
            .map_err(|e| dogcli::connect_error(&inv.addr, inv.port, &e))?;
        Ok(Session {
            client,
            addr: inv.addr.clone(),
            port: inv.port,
        })
    }

    /// Sends `req`; a sheep-side error becomes its message.
    fn call(&mut self, req: &Request) -> Result<Response> {
        match self.client.call(req) {
            Ok(Response::Error { message, .. }) => Err(Fail::Msg(message)),
            Ok(r) => Ok(r),
            Err(e) => Err(Fail::Msg(dogcli::exchange_error(
                &self.addr,
                self.port,
                TIMEOUT.as_secs(),
                &e,
            ))),
        }
    }

    fn call_ok(&mut self, req: &Request) -> Result<()> {
        match self.call(req)? {
            Response::Ok => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    /// `vdi check` (always repairing, as Sheepdog's) of one VDI.
    fn vdi_check(&mut self, name: &str) -> Result<CheckReport> {
        match self.call(&Request::VdiCheck {
            name: name.to_owned(),
            repair: true,
        })? {
            Response::Check(r) => Ok(r),
            other => Err(unexpected(&other)),
        }
    }

    fn vdi_list(&mut self) -> Result<Vec<VdiInfo>> {
        match self.call(&Request::VdiList)? {
            Response::VdiList(list) => Ok(list),
            other => Err(unexpected(&other)),
        }
    }

    /// The members of the current epoch.
    fn node_list(&mut self) -> Result<Vec<NodeEntry>> {
        match self.call(&Request::NodeList)? {
            Response::Nodes(list) => Ok(list),
            other => Err(unexpected(&other)),
        }
    }

    /// Every member's recovery state (a member that did not answer says why).
    fn node_recovery(&mut self) -> Result<Vec<MemberRecovery>> {
        match self.call(&Request::NodeRecovery)? {
            Response::NodeRecovery(list) => Ok(list),
            other => Err(unexpected(&other)),
        }
    }

    /// The working (non-snapshot) VDI called `name`.
    fn find_vdi(&mut self, name: &str) -> Result<VdiInfo> {
        self.vdi_list()?
            .into_iter()
            .find(|v| v.name == name && v.snap_id == 0)
            .ok_or_else(|| Fail::Msg(format!("vdi '{name}' not found")))
    }
}

fn unexpected(r: &Response) -> Fail {
    let kind = match r {
        Response::Ok => "an empty OK",
        Response::Error { .. } => "an error",
        Response::ClusterInfo(_) => "cluster info",
        Response::NodeInfo(_) => "node info",
        Response::Vdi(_) => "one VDI",
        Response::VdiList(_) => "a VDI list",
        Response::Data(_) => "data",
        Response::Nodes(_) => "a node list",
        Response::Location(_) => "an object location",
        Response::Copy(_) => "an object copy",
        Response::Check(_) => "a check report",
        Response::Recovery(_) => "one node's recovery state",
        Response::NodeRecovery(_) => "the nodes' recovery states",
    };
    Fail::Msg(format!(
        "unexpected answer from sheep ({kind}); are dog and sheep the same version?"
    ))
}

fn stdout_fail(e: &io::Error) -> Fail {
    if e.kind() == io::ErrorKind::BrokenPipe {
        Fail::Quiet
    } else {
        Fail::Msg(format!("stdout: {}", dogcli::io_message(e)))
    }
}

fn write_stdout(bytes: &[u8]) -> Result<()> {
    let mut out = io::stdout().lock();
    out.write_all(bytes)
        .and_then(|()| out.flush())
        .map_err(|e| stdout_fail(&e))
}

fn print_notes(ni: &NodeInfo) {
    for n in dogcli::nosync_notes(ni) {
        eprintln!("{n}");
    }
}

/// Raw output keeps its lines parseable: the notes on silent nodes go to stderr.
fn print_recovery_notes(list: &[MemberRecovery]) {
    for n in dogcli::recovery_notes(list) {
        eprintln!("{n}");
    }
}

fn run(inv: &Invocation) -> Result<()> {
    let mut s = Session::connect(inv)?;
    let tz = TimeZone::Local;
    match &inv.command {
        Command::ClusterFormat { redundancy, force } => s.call_ok(&Request::ClusterFormat {
            redundancy: *redundancy,
            force: *force,
        }),
        Command::ClusterInfo { raw } => match s.call(&Request::ClusterInfo)? {
            Response::ClusterInfo(ci) => {
                write_stdout(dogcli::format_cluster_info(&ci, *raw, tz).as_bytes())
            }
            other => Err(unexpected(&other)),
        },
        Command::ClusterShutdown => s.call_ok(&Request::ClusterShutdown),
        Command::ClusterRecover { enabled, rate } => {
            s.call_ok(&Request::ClusterRecover {
                enabled: *enabled,
                rate: *rate,
            })?;
            write_stdout(dogcli::recover_done(*enabled, *rate).as_bytes())
        }
        Command::ClusterRecoverInfo { raw } => {
            let list = s.node_recovery()?;
            if *raw {
                print_recovery_notes(&list);
            }
            write_stdout(dogcli::format_recover_info(&list, *raw).as_bytes())
        }
        Command::NodeRecovery { raw } => {
            let list = s.node_recovery()?;
            if *raw {
                print_recovery_notes(&list);
            }
            write_stdout(dogcli::format_node_recovery(&list, *raw).as_bytes())
        }
        Command::NodeInfo { raw } => match s.call(&Request::NodeInfo)? {
            Response::NodeInfo(ni) => {
                if *raw {
                    print_notes(&ni);
                }
                write_stdout(dogcli::format_node_info(&ni, *raw).as_bytes())
            }
            other => Err(unexpected(&other)),
        },
        Command::VdiCreate {
            name,
            size,
            redundancy,
        } => match s.call(&Request::VdiCreate {
            name: name.clone(),
            size: *size,
            redundancy: *redundancy,
        })? {
            Response::Ok | Response::Vdi(_) => Ok(()),
            other => Err(unexpected(&other)),
        },
        Command::VdiList { raw, name } => {
            let list = s.vdi_list()?;
            let text = dogcli::format_vdi_list(&list, name.as_deref(), *raw, tz);
            write_stdout(text.as_bytes())
        }
        Command::VdiDelete { name } => s.call_ok(&Request::VdiDelete { name: name.clone() }),
        Command::VdiResize { name, size } => match s.call(&Request::VdiResize {
            name: name.clone(),
            size: *size,
        })? {
            Response::Ok | Response::Vdi(_) => Ok(()),
            other => Err(unexpected(&other)),
        },
        Command::NodeList { raw } => {
            let nodes = s.node_list()?;
            write_stdout(dogcli::format_node_list(&nodes, *raw).as_bytes())
        }
        Command::NodeKill { id } => node_kill(&mut s, *id),
        Command::VdiObjectLocation { name, index, raw } => {
            let loc = match s.call(&Request::ObjectLocation {
                name: name.clone(),
                index: *index,
            })? {
                Response::Location(loc) => loc,
                other => return Err(unexpected(&other)),
            };
            // Only Sheepdog's "with N nodes" needs the member count.
            let nodes = if *raw || loc.copies.is_empty() {
                0
            } else {
                s.node_list()?.len()
            };
            write_stdout(dogcli::format_object_location(&loc, nodes, *raw).as_bytes())
        }
        Command::VdiCheck { name, raw } => {
            let r = s.vdi_check(name)?;
            write_stdout(dogcli::format_check(name, &r, *raw).as_bytes())?;
            dogcli::check_lost(name, &r).map_or(Ok(()), |m| Err(Fail::Msg(m)))
        }
        Command::ClusterCheck { raw } => {
            // Every VDI in turn (raw: NAME then vdi check's six numbers); all of them
            // are checked even if one has lost data.
            let mut lost = Vec::new();
            for v in s.vdi_list()?.iter().filter(|v| v.snap_id == 0) {
                let r = s.vdi_check(&v.name)?;
                let line = dogcli::format_check(&v.name, &r, *raw);
                let line = if *raw {
                    format!("{} {line}", dogcli::escape(&v.name))
                } else {
                    line
                };
                write_stdout(line.as_bytes())?;
                lost.extend(dogcli::check_lost(&v.name, &r));
            }
            if lost.is_empty() {
                Ok(())
            } else {
                Err(Fail::Msg(lost.join("; ")))
            }
        }
        Command::VdiRead { name, offset, len } => vdi_read(&mut s, name, *offset, *len),
        Command::VdiWrite { name, offset, len } => vdi_write(&mut s, name, *offset, *len),
    }
}

/// Stops node `id`, after checking it is a member, so a wrong id says which ids exist.
fn node_kill(s: &mut Session, id: u32) -> Result<()> {
    let nodes = s.node_list()?;
    if !nodes.iter().any(|n| n.id == id) {
        let mut ids: Vec<u32> = nodes.iter().map(|n| n.id).collect();
        ids.sort_unstable();
        let ids: Vec<String> = ids.iter().map(u32::to_string).collect();
        return Err(Fail::Msg(format!(
            "no node with id {id}: the cluster's ids are {} (see 'dog node list')",
            ids.join(", ")
        )));
    }
    s.call_ok(&Request::NodeKill { id })
}

/// Copies `len` bytes (default: to the end) of the VDI from `offset` to stdout.
fn vdi_read(s: &mut Session, name: &str, offset: u64, len: Option<u64>) -> Result<()> {
    let size = s.find_vdi(name)?.size;
    let len = dogcli::span(name, size, offset, len)?;
    let mut out = io::stdout().lock();
    for (off, n) in dogcli::chunks(offset, len, MAX_DATA) {
        let data = match s.call(&Request::VdiRead {
            name: name.to_string(),
            offset: off,
            len: n,
        })? {
            Response::Data(d) => d,
            other => return Err(unexpected(&other)),
        };
        if data.len() != n as usize {
            return Err(Fail::Msg(format!(
                "sheep returned {} bytes for a {n}-byte read at offset {off}",
                data.len()
            )));
        }
        out.write_all(&data).map_err(|e| stdout_fail(&e))?;
    }
    out.flush().map_err(|e| stdout_fail(&e))
}

/// Reads until `buf` is full or EOF; returns the bytes read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Copies stdin into the VDI from `offset`: exactly `len` bytes, or until EOF.
/// Everything is checked against the VDI's size first; input that is shorter than `len`
/// or longer than the VDI fails after the bytes that fit were written.
fn vdi_write(s: &mut Session, name: &str, offset: u64, len: Option<u64>) -> Result<()> {
    let size = s.find_vdi(name)?.size;
    let limit = dogcli::span(name, size, offset, len)?;
    let mut input = io::stdin().lock();
    let stdin_fail = |e: io::Error| Fail::Msg(format!("stdin: {}", dogcli::io_message(&e)));
    let mut written = 0u64;
    for (off, n) in dogcli::chunks(offset, limit, MAX_DATA) {
        let mut buf = vec![0u8; n as usize];
        let got = read_full(&mut input, &mut buf).map_err(stdin_fail)?;
        if got == 0 {
            break;
        }
        buf.truncate(got);
        s.call_ok(&Request::VdiWrite {
            name: name.to_string(),
            offset: off,
            data: buf,
        })?;
        written += got as u64;
        if got < n as usize {
            break;
        }
    }
    match len {
        Some(len) if written < len => Err(Fail::Msg(format!(
            "stdin ended after {written} of {len} bytes (those were written to '{name}')"
        ))),
        Some(_) => Ok(()),
        None if written == limit => {
            let more = read_full(&mut input, &mut [0u8; 1]).map_err(stdin_fail)?;
            if more > 0 && limit == 0 {
                Err(Fail::Msg(format!(
                    "stdin has data but offset {offset} is the end of vdi '{name}' ({size} bytes)"
                )))
            } else if more > 0 {
                Err(Fail::Msg(format!(
                    "stdin is longer than the {limit} bytes from offset {offset} to the end \
                     of vdi '{name}' ({size} bytes); the first {limit} were written"
                )))
            } else {
                Ok(())
            }
        }
        None => Ok(()),
    }
}
