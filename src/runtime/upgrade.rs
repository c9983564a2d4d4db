//! Binary upgrade: a running process starts the binary it was started from (read from disk
//! again, so a replaced file is used) with the same arguments, and hands it every listening
//! TCP socket and every UDP socket over a Unix socket (`SCM_RIGHTS`). Because the new
//! process serves the very same sockets, their listen queues are shared and no connection
//! attempt is refused during the hand-over.
//!
//! The conversation, on a `SOCK_SEQPACKET` pair whose child end the new process finds in
//! [`FD_ENV`]:
//! - old → new: one message per socket, `kind NUL entrypoint NUL address` with the socket
//!   attached (`kind` is `tcp` or `udp`, `address` the configured `entryPoints.*.address`),
//!   then `end`;
//! - new → old: `ready` once it serves, after which the old process stops accepting and
//!   drains. Anything else (the new process exits, or is not ready within
//!   [`READY_TIMEOUT`]) fails the upgrade and the old process goes on serving.
//!
//! With each HTTP/3 entrypoint's UDP socket goes one end of a Unix datagram socket pair,
//! labelled `udp NUL entrypoint@quic-forward NUL address` ([`quic_forward_pair`]): the new
//! process forwards over it the packets of the old process's QUIC connections
//! ([`super::quic_forward`]). It is labelled as a UDP socket of an entrypoint no
//! configuration names, so a binary that predates it (an upgrade back to an older version)
//! just closes it as unused.
//!
//! `sallyport upgrade` learns the outcome through a status file ([`status_path`]) that it
//! creates before signalling and the old process fills in.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::time::Duration;

/// The environment variable that gives the new process its end of the hand-over socket.
pub const FD_ENV: &str = "SALLYPORT_UPGRADE_FD";

/// How long the new process has to load its configuration and serve.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// How long the new process waits for the sockets the old one sends.
const RECEIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the label of an entrypoint's QUIC forwarding socket adds to the entrypoint's name.
const FORWARD_SUFFIX: &str = "@quic-forward";

/// The largest message: a label (an entrypoint name and an address).
const MAX_MESSAGE: usize = 4096;

/// Why an upgrade did not happen, or why a new process cannot take over.
#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    #[error("cannot find the running binary: {0}")]
    Binary(io::Error),
    #[error("cannot create the hand-over socket: {0}")]
    Channel(io::Error),
    #[error("cannot start {path}: {source}")]
    Spawn { path: PathBuf, source: io::Error },
    #[error("cannot hand the sockets over: {0}")]
    Send(io::Error),
    #[error("the new process (pid {pid}) exited before it was ready ({status})")]
    Exited { pid: u32, status: String },
    #[error("the new process (pid {pid}) was not ready within {timeout:?}; it was stopped")]
    Timeout { pid: u32, timeout: Duration },
    #[error("the new process (pid {pid}) answered {answer:?} instead of ready")]
    Unexpected { pid: u32, answer: String },
    #[error("{FD_ENV}={0:?} is not a file descriptor")]
    BadFd(String),
    #[error("cannot receive the sockets of the previous process: {0}")]
    Receive(io::Error),
    #[error("the previous process sent a malformed label {0:?}")]
    BadLabel(String),
}

/// A socket's kind in a label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Tcp,
    Udp,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Tcp => "tcp",
            Kind::Udp => "udp",
        }
    }

    fn parse(s: &str) -> Option<Kind> {
        match s {
            "tcp" => Some(Kind::Tcp),
            "udp" => Some(Kind::Udp),
            _ => None,
        }
    }
}

/// A socket of this process, labelled for the process that may take it over.
pub struct Labelled {
    pub kind: Kind,
    pub entrypoint: String,
    /// The configured address (`entryPoints.*.address`), as written by `Display`.
    pub address: String,
    pub fd: OwnedFd,
}

/// The sockets a previous process handed over, until each is claimed by the entrypoint
/// it belongs to; [`Inherited::ready`] closes the unclaimed ones and tells the previous
/// process to drain.
pub struct Inherited {
    channel: OwnedFd,
    sockets: HashMap<(Kind, String), (String, OwnedFd)>,
}

impl Inherited {
    /// The sockets handed over when this process was started by an upgrade; `None` when it
    /// was started normally.
    pub fn from_env() -> Result<Option<Inherited>, UpgradeError> {
        let Ok(value) = std::env::var(FD_ENV) else {
            return Ok(None);
        };
        let fd: RawFd = value
            .parse()
            .ok()
            .filter(|fd| *fd > 2)
            .ok_or_else(|| UpgradeError::BadFd(value.clone()))?;
        // SAFETY: the previous process put this descriptor (its end of the hand-over
        // socket) in our environment and nothing else in this process owns it.
        let channel = unsafe { OwnedFd::from_raw_fd(fd) };
        set_cloexec(&channel).map_err(UpgradeError::Receive)?;
        set_timeout(&channel, libc::SO_RCVTIMEO, RECEIVE_TIMEOUT).map_err(UpgradeError::Receive)?;
        let mut sockets = HashMap::new();
        loop {
            let (payload, fd) = receive(&channel).map_err(UpgradeError::Receive)?;
            let Some(payload) = payload else {
                return Err(UpgradeError::Receive(io::ErrorKind::UnexpectedEof.into()));
            };
            if payload == "end" {
                break;
            }
            let mut parts = payload.split('\0');
            let (Some(kind), Some(entrypoint), Some(address), None, Some(fd)) = (
                parts.next().and_then(Kind::parse),
                parts.next(),
                parts.next(),
                parts.next(),
                fd,
            ) else {
                return Err(UpgradeError::BadLabel(payload));
            };
            sockets.insert((kind, entrypoint.to_owned()), (address.to_owned(), fd));
        }
        Ok(Some(Inherited { channel, sockets }))
    }

    /// Claims the TCP listener handed over for `entrypoint` if it listened on `address`.
    pub fn tcp(&mut self, entrypoint: &str, address: &str) -> Option<std::net::TcpListener> {
        self.claim(Kind::Tcp, entrypoint, address)
            .map(std::net::TcpListener::from)
    }

    /// Claims the UDP socket handed over for `entrypoint` if it was bound to `address`.
    pub fn udp(&mut self, entrypoint: &str, address: &str) -> Option<std::net::UdpSocket> {
        self.claim(Kind::Udp, entrypoint, address)
            .map(std::net::UdpSocket::from)
    }

    /// Claims the socket over which the previous process takes the packets of its HTTP/3
    /// connections on `entrypoint`, if it sent one.
    pub fn quic_forward(&mut self, entrypoint: &str) -> Option<UnixDatagram> {
        let key = (Kind::Udp, format!("{entrypoint}{FORWARD_SUFFIX}"));
        self.sockets
            .remove(&key)
            .map(|(_, fd)| UnixDatagram::from(fd))
    }

    fn claim(&mut self, kind: Kind, entrypoint: &str, address: &str) -> Option<OwnedFd> {
        let key = (kind, entrypoint.to_owned());
        match self.sockets.remove(&key) {
            Some((was, fd)) if was == address => Some(fd),
            Some((was, _)) => {
                tracing::info!(entrypoint, from = %was, to = %address, "upgrade: the entrypoint's address changed; binding afresh");
                None
            }
            None => None,
        }
    }

    /// Closes the sockets no entrypoint claimed and tells the previous process that this
    /// one serves.
    pub fn ready(self) -> io::Result<()> {
        for ((kind, entrypoint), (address, _)) in &self.sockets {
            tracing::info!(
                kind = kind.as_str(),
                entrypoint,
                address,
                "upgrade: closing a handed-over socket no entrypoint uses any more"
            );
        }
        send(&self.channel, b"ready", None)
    }
}

/// A socket pair for forwarding the packets of `entrypoint`'s HTTP/3 connections (its UDP
/// socket configured at `address`) from a new process: the end to hand over, labelled, and
/// this process's end.
pub fn quic_forward_pair(entrypoint: &str, address: &str) -> io::Result<(Labelled, UnixDatagram)> {
    let (ours, theirs) = UnixDatagram::pair()?;
    let label = Labelled {
        kind: Kind::Udp,
        entrypoint: format!("{entrypoint}{FORWARD_SUFFIX}"),
        address: address.to_owned(),
        fd: OwnedFd::from(theirs),
    };
    Ok((label, ours))
}

/// Starts `binary` with `args` and hands it `sockets`; returns the new process's pid once
/// it reports ready. On any failure the new process is stopped (if it still runs) and this
/// one is untouched.
pub fn start_successor(
    binary: &std::path::Path,
    args: &[std::ffi::OsString],
    sockets: &[&Labelled],
) -> Result<u32, UpgradeError> {
    let (ours, theirs) = seqpacket_pair().map_err(UpgradeError::Channel)?;
    let their_fd = theirs.as_raw_fd();
    let mut command = std::process::Command::new(binary);
    command.args(args).env(FD_ENV, their_fd.to_string());
    // SAFETY: the closure only calls fcntl, which is async-signal-safe.
    unsafe {
        use std::os::unix::process::CommandExt;
        command.pre_exec(move || {
            // The child keeps its end across exec; every other descriptor stays close-on-exec.
            if libc::fcntl(their_fd, libc::F_SETFD, 0) == -1 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command.spawn().map_err(|source| UpgradeError::Spawn {
        path: binary.to_path_buf(),
        source,
    })?;
    drop(theirs);
    let pid = child.id();
    let outcome = hand_over(&ours, sockets, pid);
    if outcome.is_err() {
        // Not ready: stop it (if it still runs) and reap it so no zombie is left.
        let _ = child.kill();
        let status = child.wait();
        if let Err(UpgradeError::Unexpected { .. } | UpgradeError::Send(_)) = &outcome
            && let Ok(status) = status
        {
            return Err(UpgradeError::Exited {
                pid,
                status: status.to_string(),
            });
        }
    }
    outcome.map(|()| pid)
}

fn hand_over(channel: &OwnedFd, sockets: &[&Labelled], pid: u32) -> Result<(), UpgradeError> {
    for s in sockets {
        let label = format!("{}\0{}\0{}", s.kind.as_str(), s.entrypoint, s.address);
        send(channel, label.as_bytes(), Some(s.fd.as_raw_fd())).map_err(UpgradeError::Send)?;
    }
    send(channel, b"end", None).map_err(UpgradeError::Send)?;
    set_timeout(channel, libc::SO_RCVTIMEO, READY_TIMEOUT).map_err(UpgradeError::Send)?;
    match receive(channel) {
        Ok((Some(answer), _)) if answer == "ready" => Ok(()),
        Ok((Some(answer), _)) => Err(UpgradeError::Unexpected { pid, answer }),
        // The other end closed: the new process exited (its status comes from `wait`).
        Ok((None, _)) => Err(UpgradeError::Unexpected {
            pid,
            answer: String::new(),
        }),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            Err(UpgradeError::Timeout {
                pid,
                timeout: READY_TIMEOUT,
            })
        }
        Err(e) => Err(UpgradeError::Send(e)),
    }
}

/// Where `sallyport upgrade` finds the outcome of upgrading process `pid`.
pub fn status_path(pid: u32) -> PathBuf {
    std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
        .join(format!("sallyport-upgrade-{pid}.status"))
}

/// Writes the outcome for `sallyport upgrade`, if it asked (it creates the file first);
/// an upgrade started by a bare signal leaves nothing behind.
pub fn report_status(outcome: &Result<u32, UpgradeError>) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = status_path(std::process::id());
    let Ok(mut file) = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)
    else {
        return;
    };
    let line = match outcome {
        Ok(pid) => format!("ready {pid}\n"),
        Err(e) => format!("failed {e}\n"),
    };
    if let Err(e) = file.write_all(line.as_bytes()) {
        tracing::warn!(path = %path.display(), error = %e, "cannot write the upgrade status");
    }
}

/// Why `sallyport upgrade` could not upgrade a process.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("which process? give --pid or --pidfile")]
    NoProcess,
    #[error("cannot read the pid file {path}: {source}")]
    PidFile { path: PathBuf, source: io::Error },
    #[error("{path} does not hold a process id")]
    BadPidFile { path: PathBuf },
    #[error("cannot prepare the status file {path}: {source}")]
    StatusFile { path: PathBuf, source: io::Error },
    #[error("cannot signal process {pid}: {source}")]
    Signal { pid: u32, source: io::Error },
    #[error("process {pid} exited without reporting the upgrade")]
    Gone { pid: u32 },
    #[error("no answer from process {pid} within {timeout:?} (is it a sallyport?)")]
    NoAnswer { pid: u32, timeout: Duration },
    #[error("{0}")]
    Failed(String),
    #[error("upgraded to pid {pid}, but cannot update {path}: {source}")]
    PidFileUpdate {
        pid: u32,
        path: PathBuf,
        source: io::Error,
    },
}

/// The process id written in `path` (a pid file).
pub fn read_pid_file(path: &std::path::Path) -> Result<u32, RequestError> {
    let text = std::fs::read_to_string(path).map_err(|source| RequestError::PidFile {
        path: path.to_path_buf(),
        source,
    })?;
    text.trim()
        .parse()
        .ok()
        .filter(|pid| *pid > 1)
        .ok_or_else(|| RequestError::BadPidFile {
            path: path.to_path_buf(),
        })
}

/// Writes `pid` into the pid file `path`, replacing it atomically.
pub fn write_pid_file(path: &std::path::Path, pid: u32) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".new");
    std::fs::write(&tmp, format!("{pid}\n"))?;
    std::fs::rename(&tmp, path)
}

/// Asks process `pid` to upgrade (SIGUSR2) and waits for the outcome: the new process's
/// pid once it serves, or why the old one goes on serving.
pub fn request(pid: u32) -> Result<u32, RequestError> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let path = status_path(pid);
    let status_error = |source| RequestError::StatusFile {
        path: path.clone(),
        source,
    };
    let raw_pid = libc::pid_t::try_from(pid).map_err(|_| RequestError::Gone { pid })?;
    // A file left by an interrupted request would read as this one's answer.
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(status_error(e)),
        _ => {}
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(status_error)?;
    // Run as root for a process of another user: the file must be that user's to write.
    if let Ok(meta) = std::fs::metadata(format!("/proc/{pid}")) {
        let _ = std::os::unix::fs::chown(&path, Some(meta.uid()), Some(meta.gid()));
    }
    let outcome = wait_for_answer(raw_pid, pid, &path);
    let _ = std::fs::remove_file(&path);
    outcome
}

fn wait_for_answer(
    raw_pid: libc::pid_t,
    pid: u32,
    path: &std::path::Path,
) -> Result<u32, RequestError> {
    // SAFETY: kill has no memory effects.
    if unsafe { libc::kill(raw_pid, libc::SIGUSR2) } == -1 {
        return Err(RequestError::Signal {
            pid,
            source: io::Error::last_os_error(),
        });
    }
    // The old process answers at the latest when the new one's ready timeout ends.
    let timeout = READY_TIMEOUT + Duration::from_secs(10);
    let start = std::time::Instant::now();
    while start.elapsed() < timeout {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if let Some(line) = text.strip_suffix('\n') {
            return match line.split_once(' ') {
                Some(("ready", new_pid)) => new_pid
                    .parse()
                    .map_err(|_| RequestError::Failed(format!("unexpected answer {line:?}"))),
                Some(("failed", why)) => Err(RequestError::Failed(why.to_owned())),
                _ => Err(RequestError::Failed(format!("unexpected answer {line:?}"))),
            };
        }
        // SAFETY: signal 0 only checks that the process exists.
        if unsafe { libc::kill(raw_pid, 0) } == -1
            && io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
        {
            return Err(RequestError::Gone { pid });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(RequestError::NoAnswer { pid, timeout })
}

/// Tells systemd (`Type=notify`, `NotifyAccess=all`) that this process serves and is now
/// the service's main process: after an upgrade, the old process's exit then does not end
/// the service. Without `NOTIFY_SOCKET` (not run by systemd) it does nothing.
pub fn notify_ready() {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let message = format!("READY=1\nMAINPID={}\n", std::process::id());
    if let Err(e) = notify(&path, message.as_bytes()) {
        tracing::warn!(socket = ?path, error = %e, "cannot notify systemd");
    }
}

fn notify(path: &std::ffi::OsStr, message: &[u8]) -> io::Result<()> {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram};
    let bytes = path.as_bytes();
    // A leading `@` names a socket in the abstract namespace.
    let address = match bytes.strip_prefix(b"@") {
        Some(name) => SocketAddr::from_abstract_name(name)?,
        None => SocketAddr::from_pathname(path)?,
    };
    let socket = UnixDatagram::unbound()?;
    socket.send_to_addr(message, &address)?;
    Ok(())
}

fn seqpacket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: `fds` has room for the two descriptors socketpair writes.
    let rc = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    if rc == -1 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: socketpair succeeded, so both descriptors are open and ours alone.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn set_cloexec(fd: &OwnedFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor we own.
    if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) } == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn set_timeout(fd: &OwnedFd, option: libc::c_int, timeout: Duration) -> io::Result<()> {
    let tv = libc::timeval {
        tv_sec: libc::time_t::try_from(timeout.as_secs()).unwrap_or(libc::time_t::MAX),
        tv_usec: libc::suseconds_t::from(timeout.subsec_micros().min(999_999) as i32),
    };
    // SAFETY: `tv` is a valid timeval for the length given.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            option,
            (&raw const tv).cast(),
            size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if rc == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Room for one control message carrying one descriptor, aligned for `cmsghdr`.
#[repr(C)]
union ControlBuffer {
    _align: libc::cmsghdr,
    bytes: [u8; 64],
}

/// Sends `payload`, with `fd` attached if given, as one message.
fn send(channel: &OwnedFd, payload: &[u8], fd: Option<RawFd>) -> io::Result<()> {
    let mut iov = libc::iovec {
        iov_base: payload.as_ptr().cast_mut().cast(),
        iov_len: payload.len(),
    };
    let mut control = ControlBuffer { bytes: [0; 64] };
    // SAFETY: an all-zero msghdr is a valid empty one.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    if let Some(fd) = fd {
        // SAFETY: the control buffer is aligned for cmsghdr and larger than CMSG_SPACE of
        // one int, so the first header and its data fit in it.
        unsafe {
            let space = libc::CMSG_SPACE(size_of::<libc::c_int>() as u32) as usize;
            msg.msg_control = (&raw mut control.bytes).cast();
            msg.msg_controllen = space as _;
            let header = libc::CMSG_FIRSTHDR(&raw const msg);
            (*header).cmsg_level = libc::SOL_SOCKET;
            (*header).cmsg_type = libc::SCM_RIGHTS;
            (*header).cmsg_len = libc::CMSG_LEN(size_of::<libc::c_int>() as u32) as _;
            std::ptr::write_unaligned(libc::CMSG_DATA(header).cast::<libc::c_int>(), fd);
        }
    }
    loop {
        // SAFETY: msg points at live buffers for the duration of the call.
        let n = unsafe { libc::sendmsg(channel.as_raw_fd(), &raw const msg, libc::MSG_NOSIGNAL) };
        if n >= 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Receives one message: its text (`None` at end of stream) and the descriptor attached.
fn receive(channel: &OwnedFd) -> io::Result<(Option<String>, Option<OwnedFd>)> {
    let mut buf = vec![0u8; MAX_MESSAGE];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let mut control = ControlBuffer { bytes: [0; 64] };
    // SAFETY: an all-zero msghdr is a valid empty one.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = (&raw mut control.bytes).cast();
    msg.msg_controllen = 64;
    let n = loop {
        // SAFETY: msg points at live buffers for the duration of the call.
        let n = unsafe { libc::recvmsg(channel.as_raw_fd(), &raw mut msg, libc::MSG_CMSG_CLOEXEC) };
        if n >= 0 {
            break n as usize;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    };
    let mut fds = Vec::new();
    // SAFETY: recvmsg filled the control buffer and set msg_controllen; the CMSG macros
    // walk only within it.
    unsafe {
        let mut header = libc::CMSG_FIRSTHDR(&raw const msg);
        while !header.is_null() {
            if (*header).cmsg_level == libc::SOL_SOCKET && (*header).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(header);
                let len = (*header).cmsg_len as usize - (data as usize - header as usize);
                for i in 0..len / size_of::<libc::c_int>() {
                    let fd = std::ptr::read_unaligned(data.cast::<libc::c_int>().add(i));
                    // The kernel installed this descriptor in our table for us.
                    fds.push(OwnedFd::from_raw_fd(fd));
                }
            }
            header = libc::CMSG_NXTHDR(&raw const msg, header);
        }
    }
    if n == 0 && fds.is_empty() {
        return Ok((None, None));
    }
    buf.truncate(n);
    // More than one descriptor is not part of the conversation: the extra ones close here.
    let fd = fds.into_iter().next();
    Ok((Some(String::from_utf8_lossy(&buf).into_owned()), fd))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_socket_crosses_with_its_label() {
        let (a, b) = seqpacket_pair().expect("pair");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        send(&a, b"tcp\0web\0:8080", Some(listener.as_raw_fd())).expect("send");
        drop(listener);
        let (label, fd) = receive(&b).expect("receive");
        assert_eq!(label.as_deref(), Some("tcp\0web\0:8080"));
        let received = std::net::TcpListener::from(fd.expect("a descriptor"));
        assert_eq!(received.local_addr().expect("addr"), addr);
        // The same listening socket: a connection made now is accepted through the copy.
        let _client = std::net::TcpStream::connect(addr).expect("connect");
        received.accept().expect("accept");
    }

    #[test]
    fn a_quic_forwarding_socket_crosses_and_is_claimed_only_as_one() {
        let (a, b) = seqpacket_pair().expect("pair");
        let (label, ours) = quic_forward_pair("websecure", ":443").expect("forwarding pair");
        let text = format!("udp\0{}\0{}", label.entrypoint, label.address);
        send(&a, text.as_bytes(), Some(label.fd.as_raw_fd())).expect("send");
        drop(label);
        let (payload, fd) = receive(&b).expect("receive");
        let mut parts = payload.as_deref().unwrap_or_default().split('\0');
        let key = (Kind::Udp, parts.nth(1).unwrap_or_default().to_owned());
        let address = parts.next().unwrap_or_default().to_owned();
        let mut inherited = Inherited {
            channel: a,
            sockets: HashMap::from([(key, (address, fd.expect("a descriptor")))]),
        };
        // Not the entrypoint's UDP socket, whatever its address.
        assert!(inherited.udp("websecure", ":443").is_none());
        let theirs = inherited.quic_forward("websecure").expect("claimed");
        theirs.send(b"packet").expect("send");
        let mut buf = [0u8; 16];
        let n = ours.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..n], b"packet");
        assert!(inherited.quic_forward("websecure").is_none());
    }

    #[test]
    fn a_closed_peer_reads_as_the_end() {
        let (a, b) = seqpacket_pair().expect("pair");
        drop(a);
        let (label, fd) = receive(&b).expect("receive");
        assert!(label.is_none() && fd.is_none());
    }
}
