//! The Lua scripts in `lua/`, embedded at build time. Each is prefixed with `lib.lua`
//! (shared helpers) and invoked by SHA; redis-rs reloads a script on NOSCRIPT and retries.
//! Also [`ScriptArgs`], where a binding writes a call's `KEYS` and `ARGV`.

use redis::{Script, ScriptInvocation, ToRedisArgs};

macro_rules! script {
    ($file:literal) => {
        Script::new(concat!(
            include_str!("../../lua/lib.lua"),
            "\n",
            include_str!(concat!("../../lua/", $file))
        ))
    };
}

pub(crate) struct Scripts {
    pub(crate) reserve: Script,
    pub(crate) cancel: Script,
    pub(crate) confirm: Script,
    pub(crate) expire: Script,
    pub(crate) init: Script,
    pub(crate) adjust: Script,
    pub(crate) dead_letter: Script,
    pub(crate) replay_dead: Script,
    pub(crate) forget_consumers: Script,
    pub(crate) enter: Script,
    pub(crate) draw: Script,
    pub(crate) entry: Script,
    pub(crate) heartbeat: Script,
    pub(crate) void: Script,
}

impl Scripts {
    pub(crate) fn new() -> Scripts {
        Scripts {
            reserve: script!("reserve.lua"),
            cancel: script!("cancel.lua"),
            confirm: script!("confirm.lua"),
            expire: script!("expire.lua"),
            init: script!("init.lua"),
            adjust: script!("adjust.lua"),
            dead_letter: script!("dead_letter.lua"),
            replay_dead: script!("replay_dead.lua"),
            forget_consumers: script!("forget_consumers.lua"),
            enter: script!("enter.lua"),
            draw: script!("draw.lua"),
            entry: script!("entry.lua"),
            void: script!("void.lua"),
            heartbeat: script!("heartbeat.lua"),
        }
    }

    pub(crate) fn all(&self) -> [&Script; 14] {
        [
            &self.reserve,
            &self.cancel,
            &self.confirm,
            &self.expire,
            &self.init,
            &self.adjust,
            &self.dead_letter,
            &self.replay_dead,
            &self.forget_consumers,
            &self.enter,
            &self.draw,
            &self.entry,
            &self.heartbeat,
            &self.void,
        ]
    }
}

/// Where a script binding writes a call's `KEYS` and `ARGV`: the `ScriptInvocation` sent
/// to Redis (straight into its buffers: nothing is built twice on the hot path), or in
/// tests a [`Recorded`] call whose values can be read back.
pub(super) trait ScriptArgs {
    fn key(&mut self, key: impl ToRedisArgs) -> &mut Self;
    fn arg(&mut self, arg: impl ToRedisArgs) -> &mut Self;
}

impl ScriptArgs for ScriptInvocation<'_> {
    fn key(&mut self, key: impl ToRedisArgs) -> &mut Self {
        ScriptInvocation::key(self, key)
    }

    fn arg(&mut self, arg: impl ToRedisArgs) -> &mut Self {
        ScriptInvocation::arg(self, arg)
    }
}

/// A call's `KEYS` and `ARGV` as Redis would receive them (each value's bytes).
#[cfg(test)]
#[derive(Debug, Default)]
pub(super) struct Recorded {
    pub(super) keys: Vec<Vec<u8>>,
    pub(super) args: Vec<Vec<u8>>,
}

#[cfg(test)]
impl Recorded {
    /// `ARGV` as text (lossy), for comparing in tests.
    pub(super) fn args(&self) -> Vec<String> {
        self.args
            .iter()
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect()
    }

    /// `KEYS` as text.
    pub(super) fn keys(&self) -> Vec<String> {
        self.keys
            .iter()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .collect()
    }
}

#[cfg(test)]
impl ScriptArgs for Recorded {
    fn key(&mut self, key: impl ToRedisArgs) -> &mut Self {
        self.keys.extend(key.to_redis_args());
        self
    }

    fn arg(&mut self, arg: impl ToRedisArgs) -> &mut Self {
        self.args.extend(arg.to_redis_args());
        self
    }
}
