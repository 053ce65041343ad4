//! The `rabbitmq` sink: paid orders and refund events published to a RabbitMQ exchange
//! (AMQP 0-9-1), each acknowledged to the outbox only once the broker confirmed it.
//!
//! - Topology, on every (re)connect: the exchange `orders.rabbitmq.exchange` (durable,
//!   `direct`) and the queue `orders.rabbitmq.queue` (durable) are declared when absent.
//!   Each is looked up passively first, so one the operator made (another exchange type,
//!   a quorum queue, arguments) is used as it is. The queue is then bound to the
//!   exchange with `routing_key` (binding is idempotent).
//! - One message per entry: [`super::body`] (the http sink's JSON), `content_type`
//!   `application/json`, `delivery_mode` 2 (persistent), `app_id` `flashgate`,
//!   `message_id` the entry's [`super::idempotency_key`], which the header
//!   `idempotency-key` carries too. A message id is an AMQP short string (255 bytes at
//!   most): a longer key — a second charge with a payment id of more than ~160 bytes —
//!   is sent as `<order_id>:sha256-<hex of the payment id>` there, whole in the header.
//!   Published `mandatory`: a message no queue takes comes back, and is not stored.
//! - Publisher confirms: an entry is stored only when the broker acks it. A nack, a
//!   returned message, a closed channel or connection, or no confirm within
//!   `orders.sink_timeout` fails the entry and the outbox retries it. A publish whose
//!   confirm was lost is published again: consumers deduplicate by `message_id`.
//! - One connection with one confirm channel, shared by the batches in flight. One that
//!   failed is given up and made again by the next delivery; after a failed connect the
//!   next attempt waits (doubling from [`MIN_BACKOFF`] to [`MAX_BACKOFF`]) and deliveries
//!   meanwhile fail at once, so a broker that is down holds orders in the outbox.
//! - `amqps://` speaks TLS through rustls with the gateway's trust roots (the system's
//!   plus `orders.rabbitmq_ca_file`, `crate::tls`); certificates are always verified.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
use lapin::tcp::{AsyncTcpStream, RustlsConnector};
use lapin::types::{AMQPValue, FieldTable};
use lapin::uri::{AMQPScheme, AMQPUri};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};
use sha2::{Digest, Sha256};
use tokio::sync::Mutex;
use tokio::time::Instant;

use super::{DeliverFuture, Sink, SinkError};
use crate::config::RabbitmqConfig;
use crate::stock::outbox::Entry;

/// Entries per batch: published one after another, their confirms awaited together.
const BATCH: usize = 100;
/// The wait after a first failed connect; it doubles with each failure after that.
pub const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// The longest wait between two connects to a broker that is down.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// The longest key `message_id` (an AMQP short string) holds as it is.
const SHORT_STRING: usize = 255;

pub struct RabbitMqSink {
    /// Credentials, vhost and port. Its `host` is not used: the parser turns an IP
    /// address into `localhost`.
    uri: AMQPUri,
    /// The host as written (an IP address without brackets, or a name): where to
    /// connect, and the name a TLS certificate must carry.
    host: String,
    /// `Some` for `amqps://`: the gateway's rustls configuration.
    tls: Option<RustlsConnector>,
    names: RabbitmqConfig,
    /// Bound on connecting (topology included) and, separately, on a batch's confirms.
    timeout: Duration,
    /// Held only to look at the link or make it; never while publishing.
    state: Mutex<State>,
}

struct State {
    link: Option<Arc<Link>>,
    /// After a failed connect: no attempt before this.
    retry_at: Option<Instant>,
    /// The wait after the next failed connect.
    backoff: Duration,
}

/// A connection and its confirm channel; dropping the last handle closes both.
struct Link {
    conn: Connection,
    channel: Channel,
}

impl Link {
    fn usable(&self) -> bool {
        self.conn.status().connected() && self.channel.status().connected()
    }
}

impl RabbitMqSink {
    /// `url`: `amqp://` or `amqps://`; `ca_file`: extra trust roots for `amqps://`
    /// (`orders.rabbitmq_ca_file`). Connects on the first delivery, not here.
    pub fn new(
        url: &str,
        names: &RabbitmqConfig,
        timeout: Duration,
        ca_file: Option<&Path>,
    ) -> Result<RabbitMqSink, SinkError> {
        // Never the URL itself in an error: it may hold a password.
        let bad = |what: &str| SinkError::Config(format!("rabbitmq url: {what}"));
        let uri: AMQPUri = url.parse().map_err(|_| bad("not an AMQP URL"))?;
        let host = url
            .parse::<http::Uri>()
            .ok()
            .and_then(|u| u.host().map(|h| h.trim_matches(['[', ']']).to_owned()))
            .filter(|h| !h.is_empty())
            .ok_or_else(|| bad("no host"))?;
        let tls = match uri.scheme {
            AMQPScheme::AMQP => None,
            AMQPScheme::AMQPS => {
                let cfg = crate::tls::client_config(ca_file)
                    .map_err(|e| SinkError::Config(format!("rabbitmq TLS: {e}")))?;
                Some(RustlsConnector::from(cfg))
            }
        };
        Ok(RabbitMqSink {
            uri,
            host,
            tls,
            names: names.clone(),
            timeout,
            state: Mutex::new(State {
                link: None,
                retry_at: None,
                backoff: MIN_BACKOFF,
            }),
        })
    }

    /// The shared link, made when there is none (or it closed) unless a failed connect
    /// asked to wait.
    async fn link(&self) -> Result<Arc<Link>, SinkError> {
        let mut state = self.state.lock().await;
        if let Some(link) = state.link.as_ref().filter(|l| l.usable()) {
            return Ok(link.clone());
        }
        state.link = None;
        let now = Instant::now();
        if let Some(at) = state.retry_at.filter(|at| *at > now) {
            return Err(SinkError::Unreachable(format!(
                "broker unreachable; next connect in {} ms",
                (at - now).as_millis()
            )));
        }
        let made = tokio::time::timeout(self.timeout, self.connect())
            .await
            .unwrap_or_else(|_| Err(format!("no connection within {:?}", self.timeout)));
        match made {
            Ok(link) => {
                let link = Arc::new(link);
                *state = State {
                    link: Some(link.clone()),
                    retry_at: None,
                    backoff: MIN_BACKOFF,
                };
                tracing::info!(host = %self.host, "rabbitmq sink connected");
                Ok(link)
            }
            Err(e) => {
                let wait = state.backoff;
                state.retry_at = Some(Instant::now() + wait);
                state.backoff = (wait * 2).min(MAX_BACKOFF);
                tracing::warn!(host = %self.host, error = %e, retry_in = ?wait, "rabbitmq sink cannot connect");
                Err(SinkError::Unreachable(e))
            }
        }
    }

    /// Gives up `link` after it failed, unless a newer one already replaced it.
    async fn drop_link(&self, link: &Arc<Link>) {
        let mut state = self.state.lock().await;
        if state.link.as_ref().is_some_and(|l| Arc::ptr_eq(l, link)) {
            state.link = None;
        }
    }

    /// Connects (over TLS for `amqps://`), declares the topology, opens the confirm
    /// channel.
    async fn connect(&self) -> Result<Link, String> {
        let (host, port, tls) = (self.host.clone(), self.uri.authority.port, self.tls.clone());
        // lapin's IO thread calls this (again only if we asked it to reconnect, which we
        // don't: a lost connection is made anew here).
        let open = async move |_uri, runtime| {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
                .await?
                .collect();
            let tcp = AsyncTcpStream::connect(&runtime, addrs).await?;
            Ok::<_, lapin::Error>(match &tls {
                Some(tls) => tcp.into_rustls(tls, &host).await?,
                None => tcp,
            })
        };
        let runtime = lapin::runtime::default_runtime().map_err(|e| e.to_string())?;
        let props = ConnectionProperties::default().with_connection_name("flashgate".into());
        let conn = Connection::connector(self.uri.clone(), runtime, open, props)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let channel = self
            .declare(&conn)
            .await
            .map_err(|e| format!("declare: {e}"))?;
        Ok(Link { conn, channel })
    }

    /// The exchange and the queue, each declared durable only when a passive declare
    /// says it is absent (that answer closes the channel it came on: the next step takes
    /// a new one); the binding; publisher confirms on the channel returned.
    async fn declare(&self, conn: &Connection) -> lapin::Result<Channel> {
        let n = &self.names;
        let mut ch = conn.create_channel().await?;
        let passive = ExchangeDeclareOptions {
            passive: true,
            ..Default::default()
        };
        let kind = lapin::ExchangeKind::Direct;
        let found = ch
            .exchange_declare(n.exchange.as_str().into(), kind.clone(), passive, no_args())
            .await;
        if absent(found)? {
            ch = conn.create_channel().await?;
            let durable = ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            };
            ch.exchange_declare(n.exchange.as_str().into(), kind, durable, no_args())
                .await?;
        }
        let passive = QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        let found = ch
            .queue_declare(n.queue.as_str().into(), passive, no_args())
            .await;
        if absent(found.map(drop))? {
            ch = conn.create_channel().await?;
            let durable = QueueDeclareOptions {
                durable: true,
                ..Default::default()
            };
            ch.queue_declare(n.queue.as_str().into(), durable, no_args())
                .await?;
        }
        ch.queue_bind(
            n.queue.as_str().into(),
            n.exchange.as_str().into(),
            n.routing_key.as_str().into(),
            QueueBindOptions::default(),
            no_args(),
        )
        .await?;
        ch.confirm_select(ConfirmSelectOptions::default()).await?;
        Ok(ch)
    }

    /// Publishes every entry, then waits for each one's confirm.
    async fn publish(&self, link: &Link, entries: &[Entry]) -> Vec<Result<(), SinkError>> {
        let mandatory = BasicPublishOptions {
            mandatory: true,
            ..Default::default()
        };
        let mut confirms = Vec::with_capacity(entries.len());
        for entry in entries {
            let sent = link
                .channel
                .basic_publish(
                    self.names.exchange.as_str().into(),
                    self.names.routing_key.as_str().into(),
                    mandatory,
                    &super::body(entry),
                    properties(entry),
                )
                .await;
            confirms.push(sent);
        }
        let mut out = Vec::with_capacity(entries.len());
        for sent in confirms {
            out.push(match sent {
                Ok(confirm) => confirmed(confirm.await),
                Err(e) => Err(SinkError::Unreachable(format!("publish: {e}"))),
            });
        }
        out
    }
}

impl Sink for RabbitMqSink {
    fn name(&self) -> &'static str {
        "rabbitmq"
    }

    fn batch_size(&self) -> usize {
        BATCH
    }

    fn deliver<'a>(&'a self, entries: &'a [Entry]) -> DeliverFuture<'a> {
        Box::pin(async move {
            let link = match self.link().await {
                Ok(link) => link,
                Err(e) => return vec![Err(e); entries.len()],
            };
            let out = tokio::time::timeout(self.timeout, self.publish(&link, entries))
                .await
                .unwrap_or_else(|_| {
                    let e = format!("no confirm within {:?}", self.timeout);
                    vec![Err(SinkError::Unreachable(e)); entries.len()]
                });
            // A nack or a returned message leaves the channel open; anything else does
            // not, or may not: make a new link next time.
            if out
                .iter()
                .any(|r| matches!(r, Err(SinkError::Unreachable(_))))
            {
                self.drop_link(&link).await;
            }
            out
        })
    }
}

/// An entry's message properties: persistent JSON, identified by its key.
fn properties(entry: &Entry) -> BasicProperties {
    let key = super::idempotency_key(entry);
    let id = message_id(entry, &key);
    let mut headers = FieldTable::default();
    headers.insert("idempotency-key".into(), AMQPValue::LongString(key.into()));
    BasicProperties::default()
        .with_content_type("application/json".into())
        .with_delivery_mode(2)
        .with_message_id(id.into())
        .with_app_id("flashgate".into())
        .with_headers(headers)
}

/// `key` when it fits a short string, else the order id and a digest of the payment id
/// (only a second charge's key can be that long: an order id is at most 91 bytes).
fn message_id(entry: &Entry, key: &str) -> String {
    if key.len() <= SHORT_STRING {
        return key.to_owned();
    }
    let payment = entry.order.payment_id.as_deref().unwrap_or_default();
    let digest = Sha256::digest(payment.as_bytes());
    format!("{}:sha256-{}", entry.order.order_id, hex::encode(digest))
}

/// What a publisher confirm says about the message.
fn confirmed(confirm: lapin::Result<Confirmation>) -> Result<(), SinkError> {
    match confirm {
        Ok(Confirmation::Ack(None)) => Ok(()),
        Ok(Confirmation::Ack(Some(back)) | Confirmation::Nack(Some(back))) => {
            Err(SinkError::Refused(format!(
                "returned by the broker: {} {} (no queue bound to the exchange with the routing key?)",
                back.reply_code, back.reply_text
            )))
        }
        Ok(Confirmation::Nack(None)) => Err(SinkError::Refused("nacked by the broker".into())),
        Ok(Confirmation::NotRequested) => Err(SinkError::Unreachable(
            "the channel is not in confirm mode".into(),
        )),
        Err(e) => Err(SinkError::Unreachable(format!("no confirm: {e}"))),
    }
}

/// `Ok(true)` when a passive declare found nothing.
fn absent(declared: lapin::Result<()>) -> lapin::Result<bool> {
    match declared {
        Ok(()) => Ok(false),
        Err(e) => match e.kind() {
            lapin::ErrorKind::ProtocolError(amqp)
                if *amqp.kind() == AMQPErrorKind::Soft(AMQPSoftError::NOTFOUND) =>
            {
                Ok(true)
            }
            _ => Err(e),
        },
    }
}

fn no_args() -> FieldTable {
    FieldTable::default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stock::outbox::Event;
    use crate::stock::{Order, OrderStatus};

    fn entry(event: Event, payment_id: &str) -> Entry {
        Entry {
            stream: "s".into(),
            id: "1-0".into(),
            event,
            order: Order {
                order_id: "01JAAAAAAAAAAAAAAAAAAAAAAA.sale".into(),
                campaign: "sale".into(),
                sku: "a".into(),
                user_id: "u".into(),
                quantity: 1,
                amount_cents: 100,
                status: OrderStatus::Paid,
                created_at: 0,
                pay_by: 0,
                payment_id: Some(payment_id.into()),
                paid_at: Some(0),
            },
        }
    }

    #[test]
    fn message_ids_are_the_idempotency_key() {
        let paid = entry(Event::Paid, "pay_1");
        let p = properties(&paid);
        assert_eq!(
            p.message_id().as_ref().map(|s| s.as_str()),
            Some("01JAAAAAAAAAAAAAAAAAAAAAAA.sale")
        );
        assert_eq!(p.delivery_mode(), &Some(2));
        assert_eq!(
            p.content_type().as_ref().map(|s| s.as_str()),
            Some("application/json")
        );
        let again = entry(Event::SecondCharge, "pay_2");
        let p = properties(&again);
        assert_eq!(
            p.message_id().as_ref().map(|s| s.as_str()),
            Some("01JAAAAAAAAAAAAAAAAAAAAAAA.sale:pay_2")
        );
    }

    #[test]
    fn a_key_too_long_for_a_message_id_is_digested_there_and_whole_in_the_header() {
        let long = "p".repeat(256);
        let e = entry(Event::SecondCharge, &long);
        let key = super::super::idempotency_key(&e);
        assert!(key.len() > SHORT_STRING);
        let p = properties(&e);
        let id = p.message_id().as_ref().unwrap().as_str().to_owned();
        assert!(id.len() <= SHORT_STRING, "{id}");
        assert!(
            id.starts_with("01JAAAAAAAAAAAAAAAAAAAAAAA.sale:sha256-"),
            "{id}"
        );
        assert_eq!(id, message_id(&e, &key), "the same entry, the same id");
        let headers = p.headers().as_ref().unwrap();
        let header = headers.inner().get("idempotency-key");
        assert_eq!(
            header,
            Some(&AMQPValue::LongString(key.as_str().into())),
            "the header keeps the whole key"
        );
    }

    #[test]
    fn urls_are_refused_without_being_echoed() {
        let names = RabbitmqConfig::default();
        let t = Duration::from_secs(1);
        for url in ["http://u:hunter2@h/", "amqp://u:hunter2@:5672/"] {
            match RabbitMqSink::new(url, &names, t, None) {
                Err(SinkError::Config(m)) => assert!(!m.contains("hunter2"), "{m}"),
                other => panic!("{url}: {:?}", other.err()),
            }
        }
        let ok = RabbitMqSink::new("amqp://g:g@127.0.0.1:5673/%2f", &names, t, None).unwrap();
        assert_eq!(ok.host, "127.0.0.1");
        assert_eq!(ok.uri.authority.port, 5673);
        let v6 = RabbitMqSink::new("amqp://[::1]/", &names, t, None).unwrap();
        assert_eq!(v6.host, "::1");
        assert_eq!(v6.uri.authority.port, 5672);
    }
}
