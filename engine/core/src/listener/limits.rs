//! The limits every listener applies to its connections: who may connect ([`AllowList`]), how
//! long one unit of the protocol may take to arrive ([`UnitClock`], [`read_some`]), and how many
//! bytes all connections of one listener may hold in buffers at once ([`ByteBudget`]). See the
//! module above for what these defend against.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// Peers allowed to connect: addresses and CIDR blocks. Empty allows every peer.
#[derive(Debug, Clone, Default)]
pub struct AllowList(Vec<Cidr>);

/// An allow-list entry: an address and a prefix length.
#[derive(Debug, Clone, Copy)]
struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl AllowList {
    /// Reads `10.12.0.0/16`, `127.0.0.1`, `::1/128`, …; an error names the bad entry.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<AllowList, String> {
        entries
            .iter()
            .map(|s| Cidr::parse(s.as_ref()))
            .collect::<Result<Vec<_>, _>>()
            .map(AllowList)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `ip` may connect (always, when the list is empty). An IPv4-mapped IPv6 peer
    /// matches the IPv4 entries.
    pub fn admits(&self, ip: IpAddr) -> bool {
        self.0.is_empty() || self.0.iter().any(|c| c.contains(ip))
    }
}

/// The warning for a listener that any host on the network may reach: it listens on an
/// address other than loopback and has no allow-list. `None` when that is not the case.
pub fn open_to_all_warning(listen: &str, allow: &AllowList) -> Option<String> {
    let addr: SocketAddr = listen.parse().ok()?;
    (allow.is_empty() && !addr.ip().is_loopback()).then(|| {
        format!(
            "listens on {listen} with no allow list: every host that can reach the port may connect; name the senders in `allow` (addresses or CIDR blocks)"
        )
    })
}

impl Cidr {
    fn parse(s: &str) -> Result<Cidr, String> {
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = a
            .trim()
            .parse()
            .map_err(|_| format!("allow: {s:?} is not an IP address or CIDR block"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("allow: bad prefix length in {s:?} (0..={max})"))?,
            None => max,
        };
        Ok(Cidr { addr, prefix })
    }

    fn contains(&self, ip: IpAddr) -> bool {
        let ip = match (self.addr, ip) {
            (IpAddr::V4(_), IpAddr::V6(v6)) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            _ => ip,
        };
        match (self.addr, ip) {
            (IpAddr::V4(a), IpAddr::V4(b)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(a) & mask == u32::from(b) & mask
            }
            (IpAddr::V6(a), IpAddr::V6(b)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(a) & mask == u128::from(b) & mask
            }
            _ => false,
        }
    }
}

/// The deadline of one protocol unit (a frame): it starts at the unit's first byte and does
/// not move while more bytes trickle in; [`UnitClock::finish`] stops it when the unit is
/// complete.
#[derive(Debug, Clone)]
pub struct UnitClock {
    limit: Duration,
    started: Option<Instant>,
    /// What a unit is called in errors (`frame`, `PDU`).
    unit: &'static str,
}

impl UnitClock {
    /// A clock for units called `unit` in errors (`frame`, `PDU`).
    pub fn new(limit: Duration, unit: &'static str) -> UnitClock {
        UnitClock {
            limit,
            started: None,
            unit,
        }
    }

    /// A unit has begun (its first byte arrived); no effect when one is already running.
    pub fn start(&mut self) {
        if self.started.is_none() {
            self.started = Some(Instant::now());
        }
    }

    /// The unit is complete (or there is none in progress).
    pub fn finish(&mut self) {
        self.started = None;
    }

    /// When the unit in progress must be complete.
    pub fn deadline(&self) -> Option<Instant> {
        self.started.map(|s| s + self.limit)
    }

    pub fn limit(&self) -> Duration {
        self.limit
    }
}

/// Why [`read_some`] stopped without data.
#[derive(Debug)]
pub enum ReadStop {
    /// Nothing arrived for the idle timeout, between units.
    Idle(Duration),
    /// The unit in progress (named) was not complete by its deadline.
    Unfinished(Duration, &'static str),
    Io(std::io::Error),
}

impl std::fmt::Display for ReadStop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadStop::Idle(d) => write!(f, "idle for {d:?}, closed"),
            ReadStop::Unfinished(d, unit) => {
                write!(
                    f,
                    "a {unit} was not complete {d:?} after its first byte, closed"
                )
            }
            ReadStop::Io(e) => write!(f, "{e}"),
        }
    }
}

/// One read: waits at most the idle timeout, and never past the deadline of the unit in
/// progress (whichever comes first). `Ok(0)` is the peer's close.
pub async fn read_some<R: AsyncRead + Unpin>(
    stream: &mut R,
    buf: &mut [u8],
    idle: Duration,
    clock: &UnitClock,
) -> Result<usize, ReadStop> {
    let idle_at = Instant::now() + idle;
    let (at, stop) = match clock.deadline() {
        Some(d) if d <= idle_at => (d, ReadStop::Unfinished(clock.limit, clock.unit)),
        _ => (idle_at, ReadStop::Idle(idle)),
    };
    match tokio::time::timeout_at(at, stream.read(buf)).await {
        Err(_) => Err(stop),
        Ok(Err(e)) => Err(ReadStop::Io(e)),
        Ok(Ok(n)) => Ok(n),
    }
}

/// The bytes all connections of one listener may hold in their buffers at once.
///
/// A connection that waits for room takes nothing until its whole request fits: a waiter
/// that reserved the last free bytes piecemeal (as a fair semaphore's queued `acquire_many`
/// does) would starve the connections whose few remaining bytes would complete a frame and
/// free their share, and all would wait until their deadlines.
#[derive(Debug, Clone)]
pub struct ByteBudget {
    sem: Arc<Semaphore>,
    total: usize,
    /// Signalled whenever a connection gives bytes back.
    freed: Arc<tokio::sync::Notify>,
}

/// What one connection holds of a [`ByteBudget`]; released when dropped.
#[derive(Debug)]
pub struct BudgetHold {
    budget: ByteBudget,
    held: Option<OwnedSemaphorePermit>,
}

/// The budget stayed full until the unit's deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetExhausted {
    pub total: usize,
}

impl ByteBudget {
    pub fn new(total: usize) -> ByteBudget {
        let total = total.min(Semaphore::MAX_PERMITS);
        ByteBudget {
            sem: Arc::new(Semaphore::new(total)),
            total,
            freed: Arc::new(tokio::sync::Notify::new()),
        }
    }

    pub fn total(&self) -> usize {
        self.total
    }

    /// Bytes not held by any connection.
    pub fn available(&self) -> usize {
        self.sem.available_permits()
    }

    /// A connection's share, empty at first.
    pub fn hold(&self) -> BudgetHold {
        BudgetHold {
            budget: self.clone(),
            held: None,
        }
    }
}

impl BudgetHold {
    /// Bytes held now.
    pub fn held(&self) -> usize {
        self.held.as_ref().map_or(0, |p| p.num_permits())
    }

    /// Takes `n` more bytes if the budget has them now.
    pub fn try_grow(&mut self, n: usize) -> bool {
        if n == 0 {
            return true;
        }
        let Ok(want) = u32::try_from(n) else {
            return false;
        };
        match self.budget.sem.clone().try_acquire_many_owned(want) {
            Ok(p) => {
                match &mut self.held {
                    Some(h) => h.merge(p),
                    None => self.held = Some(p),
                }
                true
            }
            Err(_) => false,
        }
    }

    /// Takes `n` more bytes, waiting while the budget is full, but not past `deadline`.
    /// Returns whether it had to wait (for a log line), or the error at the deadline.
    pub async fn grow(
        &mut self,
        n: usize,
        deadline: Option<Instant>,
    ) -> Result<bool, BudgetExhausted> {
        if n == 0 {
            return Ok(false);
        }
        let exhausted = BudgetExhausted {
            total: self.budget.total,
        };
        let want = u32::try_from(n).map_err(|_| exhausted)?;
        let sem = self.budget.sem.clone();
        let mut waited = false;
        let permit = loop {
            // Registered before the attempt, so a release between the two is not missed.
            let freed = self.budget.freed.clone();
            let notified = freed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Ok(p) = sem.clone().try_acquire_many_owned(want) {
                break p;
            }
            waited = true;
            match deadline {
                Some(d) => tokio::time::timeout_at(d, notified)
                    .await
                    .map_err(|_| exhausted)?,
                None => notified.await,
            }
        };
        match &mut self.held {
            Some(h) => h.merge(permit),
            None => self.held = Some(permit),
        }
        Ok(waited)
    }

    /// Gives back all but `keep` bytes.
    pub fn shrink_to(&mut self, keep: usize) {
        let held = self.held();
        if keep >= held {
            return;
        }
        if keep == 0 {
            self.held = None;
        } else if let Some(h) = &mut self.held {
            // Split off what is released and drop it.
            drop(h.split(held - keep));
        }
        self.budget.freed.notify_waiters();
    }
}

impl Drop for BudgetHold {
    fn drop(&mut self) {
        if self.held.take().is_some() {
            self.budget.freed.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_list_matches_addresses_and_blocks() {
        let a = AllowList::parse(&["10.12.0.0/16", "127.0.0.1", "::1/128"]).unwrap();
        assert!(a.admits("10.12.3.4".parse().unwrap()));
        assert!(!a.admits("10.13.0.1".parse().unwrap()));
        assert!(a.admits("::ffff:10.12.0.9".parse().unwrap()));
        assert!(a.admits("127.0.0.1".parse().unwrap()));
        assert!(!a.admits("127.0.0.2".parse().unwrap()));
        assert!(a.admits("::1".parse().unwrap()));
        assert!(AllowList::parse(&["10.0.0.0/33"]).is_err());
        assert!(AllowList::parse(&["host.example"]).is_err());
        assert!(AllowList::default().admits("192.0.2.1".parse().unwrap()));
    }

    #[test]
    fn only_exposed_listeners_without_a_list_are_warned_about() {
        let none = AllowList::default();
        let some = AllowList::parse(&["10.0.0.0/8"]).unwrap();
        assert!(open_to_all_warning("0.0.0.0:2575", &none).is_some());
        assert!(open_to_all_warning("10.1.2.3:2575", &none).is_some());
        assert!(open_to_all_warning("[::]:2575", &none).is_some());
        assert!(open_to_all_warning("127.0.0.1:2575", &none).is_none());
        assert!(open_to_all_warning("[::1]:2575", &none).is_none());
        assert!(open_to_all_warning("0.0.0.0:2575", &some).is_none());
    }

    #[tokio::test]
    async fn budget_is_shared_waits_and_is_released() {
        let budget = ByteBudget::new(100);
        let mut a = budget.hold();
        let mut b = budget.hold();
        assert_eq!(a.grow(60, None).await, Ok(false));
        assert_eq!(b.grow(30, None).await, Ok(false));
        assert_eq!(budget.available(), 10);
        // b wants 20 more: only 10 left, so it waits, and gives up at the deadline.
        let soon = Instant::now() + Duration::from_millis(50);
        assert_eq!(
            b.grow(20, Some(soon)).await,
            Err(BudgetExhausted { total: 100 })
        );
        assert_eq!(b.held(), 30);
        // a releases most of its share: b gets its 20 after waiting.
        let release = async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            a.shrink_to(5);
        };
        let (got, ()) = tokio::join!(b.grow(20, None), release);
        assert_eq!(got, Ok(true));
        assert_eq!((a.held(), b.held(), budget.available()), (5, 50, 45));
        drop(a);
        b.shrink_to(0);
        assert_eq!(budget.available(), 100);
    }

    /// A connection waiting for more than is free takes nothing meanwhile: the few bytes that
    /// complete another connection's frame (and free its share) still fit.
    #[tokio::test]
    async fn a_waiting_connection_does_not_starve_one_that_would_finish() {
        let budget = ByteBudget::new(100);
        let mut a = budget.hold();
        assert!(a.try_grow(90));
        let mut b = budget.hold();
        let waiter = tokio::spawn(async move { b.grow(60, None).await.map(|_| b) });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(budget.available(), 10, "the waiter reserved nothing");
        assert!(a.try_grow(5), "a's last bytes fit while b waits");
        a.shrink_to(0);
        let b = tokio::time::timeout(Duration::from_secs(2), waiter)
            .await
            .expect("b gets its bytes once a's are freed")
            .unwrap()
            .unwrap();
        assert_eq!((b.held(), budget.available()), (60, 40));
    }

    #[tokio::test]
    async fn a_unit_deadline_does_not_move_with_trickled_bytes() {
        let (mut client, mut server) = tokio::io::duplex(64);
        let mut clock = UnitClock::new(Duration::from_millis(300), "frame");
        let idle = Duration::from_millis(200);
        let trickle = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            for _ in 0..40 {
                if client.write_all(b"x").await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        let started = Instant::now();
        let mut buf = [0u8; 8];
        let stop = loop {
            match read_some(&mut server, &mut buf, idle, &clock).await {
                Ok(0) => panic!("closed"),
                Ok(_) => clock.start(),
                Err(e) => break e,
            }
        };
        assert!(matches!(stop, ReadStop::Unfinished(..)), "{stop}");
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(290) && took < Duration::from_millis(1500),
            "{took:?}"
        );
        trickle.abort();
    }
}
