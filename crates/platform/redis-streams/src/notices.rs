//! Listening for the changes [`crate::RedisShardLeases`] announces (a member joined or
//! left, leases given up), so a member acts on them at once rather than at its next tick.
//!
//! The listener has a client of its own: a connection that has subscribed serves nothing
//! else. A notice is only a hint to look again: one published while the listener is
//! reconnecting is lost, and the member's regular tick finds the change a little later.

use fred::clients::Client;
use fred::interfaces::{EventInterface, PubsubInterface};
use fred::types::Message;
use tokio::sync::broadcast::Receiver;
use tokio::sync::broadcast::error::RecvError;

use crate::client::{ConnectError, connect};
use crate::settings::RedisSettings;

/// The announcements on one channel, as they come.
pub struct ChangeNotices {
    client: Client,
    messages: Receiver<Message>,
}

impl std::fmt::Debug for ChangeNotices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChangeNotices").finish_non_exhaustive()
    }
}

impl ChangeNotices {
    /// Connects a client named `name` to the server `url` names and subscribes to
    /// `channel`, again after every reconnection.
    ///
    /// # Errors
    /// [`ConnectError`] when the server cannot be reached or refuses the subscription.
    pub async fn subscribe(
        url: &str,
        settings: RedisSettings,
        name: &str,
        channel: &str,
    ) -> Result<Self, ConnectError> {
        let redis = connect(url, settings, name).await?;
        let client = redis.fred().clone();
        let messages = client.message_rx();
        client
            .subscribe(channel)
            .await
            .map_err(|e| ConnectError::Unreachable {
                server: redis.server().to_owned(),
                name: name.to_owned(),
                source: Box::new(e),
            })?;
        resubscribe_on_reconnect(&client, name, channel);
        Ok(Self { client, messages })
    }

    /// Waits for the next notice, what it announces (`joined`, `left`, `released`, or
    /// `missed` when notices came faster than they were taken); `None` once the listener
    /// is closed.
    pub async fn next(&mut self) -> Option<String> {
        match self.messages.recv().await {
            Ok(message) => Some(message.value.as_string().unwrap_or_default()),
            Err(RecvError::Lagged(_)) => Some("missed".to_owned()),
            Err(RecvError::Closed) => None,
        }
    }

    /// Closes the connection.
    pub async fn close(self) {
        // Best effort: a server gone already is no reason to wait.
        let _ = fred::interfaces::ClientLike::quit(&self.client).await;
    }
}

/// A reconnected connection has no subscription: subscribe again (queued until the
/// client is connected, not failed at once as the other commands of this crate are).
fn resubscribe_on_reconnect(client: &Client, name: &str, channel: &str) {
    let (again, name, channel) = (client.clone(), name.to_owned(), channel.to_owned());
    drop(client.on_reconnect(move |_server| {
        let (again, name, channel) = (again.clone(), name.clone(), channel.clone());
        async move {
            if let Err(error) = again.subscribe(channel).await {
                tracing::warn!(redis.client = %name, error = %error, "could not subscribe again; changes are seen at the next tick");
            }
            Ok(())
        }
    }));
}
