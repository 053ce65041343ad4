//! `RedisProxy`: a TCP proxy on 127.0.0.1:<free port> in front of a test Redis that can
//! lose replies. Armed with a marker, the connection whose request carries it is closed
//! when Redis' reply arrives and the reply is dropped: a call that ran in Redis whose
//! caller never hears so (what a Redis killed at the wrong instant does). It can also
//! refuse connections, so a client cannot get back in for a while, and hold Redis'
//! replies back (calls run, their callers wait) until told to let them through, or cut
//! every open connection (the held replies are then lost).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Default)]
struct State {
    /// Bytes whose presence in a request dooms its connection's next reply (once).
    marker: Mutex<Option<Vec<u8>>>,
    refusing: AtomicBool,
    lost: AtomicUsize,
    /// While true, replies are kept back.
    holding: tokio::sync::watch::Sender<bool>,
    /// Bumped to close every open connection.
    cuts: tokio::sync::watch::Sender<u64>,
}

pub struct RedisProxy {
    port: u16,
    state: Arc<State>,
    accept: tokio::task::JoinHandle<()>,
}

impl RedisProxy {
    pub async fn start(redis_port: u16) -> RedisProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().expect("proxy addr").port();
        let state = Arc::new(State::default());
        let st = state.clone();
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if st.refusing.load(Ordering::SeqCst) {
                    continue; // dropped: closed at once
                }
                tokio::spawn(pipe(client, redis_port, st.clone()));
            }
        });
        RedisProxy {
            port,
            state,
            accept,
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// The next request containing `marker` runs in Redis, and its reply is lost.
    pub fn lose_reply_to(&self, marker: &str) {
        *self.state.marker.lock().unwrap() = Some(marker.as_bytes().to_vec());
    }

    /// Replies lost so far.
    pub fn replies_lost(&self) -> usize {
        self.state.lost.load(Ordering::SeqCst)
    }

    /// While on, Redis' replies are kept back (in order) and delivered when it goes off.
    pub fn hold_replies(&self, on: bool) {
        self.state.holding.send_replace(on);
    }

    /// Closes every open connection; replies held back are lost.
    pub fn cut(&self) {
        self.state.cuts.send_modify(|n| *n += 1);
    }

    /// While on, new connections are closed as soon as they are accepted.
    pub fn set_refusing(&self, on: bool) {
        self.state.refusing.store(on, Ordering::SeqCst);
    }
}

impl Drop for RedisProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn pipe(mut client: TcpStream, redis_port: u16, st: Arc<State>) {
    let Ok(mut server) = TcpStream::connect(("127.0.0.1", redis_port)).await else {
        return;
    };
    let (mut cr, mut cw) = client.split();
    let (mut sr, mut sw) = server.split();
    let mut doomed = false;
    // Replies kept back while the proxy holds them.
    let mut held = Vec::new();
    let mut holding = st.holding.subscribe();
    let mut cuts = st.cuts.subscribe();
    let (mut up, mut down) = (vec![0u8; 64 * 1024], vec![0u8; 64 * 1024]);
    loop {
        tokio::select! {
            // A cut wins over replies released at the same moment: they are lost.
            biased;
            _ = cuts.changed() => return,
            n = cr.read(&mut up) => {
                let Ok(n @ 1..) = n else { return };
                let chunk = &up[..n];
                {
                    let mut marker = st.marker.lock().unwrap();
                    let hit = marker
                        .as_deref()
                        .is_some_and(|m| chunk.windows(m.len()).any(|w| w == m));
                    if hit {
                        *marker = None;
                        doomed = true;
                    }
                }
                if sw.write_all(chunk).await.is_err() {
                    return;
                }
            }
            n = sr.read(&mut down) => {
                let Ok(n @ 1..) = n else { return };
                if doomed {
                    st.lost.fetch_add(1, Ordering::SeqCst);
                    return; // both sides closed, the reply never delivered
                }
                held.extend_from_slice(&down[..n]);
                let hold = *st.holding.borrow();
                if !hold && cw.write_all(&std::mem::take(&mut held)).await.is_err() {
                    return;
                }
            }
            _ = async { holding.wait_for(|on| !on).await.map(drop) }, if !held.is_empty() => {
                if cw.write_all(&std::mem::take(&mut held)).await.is_err() {
                    return;
                }
            }
        }
    }
}
