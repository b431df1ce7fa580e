//! The Events service: a server stream of lifecycle and OOM events from the daemon's
//! broadcast bus. A subscriber that falls behind by more than the bus's capacity misses the
//! oldest events (reported as a `lagged` event carrying the count), never blocks the daemon.

use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::broadcast::error::RecvError;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::daemon::Daemon;
use crate::proto::events_server::Events;
use crate::proto::{Event, SubscribeRequest};

/// The Events service.
#[derive(Debug, Clone)]
pub struct EventsService(pub Arc<Daemon>);

type EventStream = Pin<Box<dyn Stream<Item = Result<Event, Status>> + Send>>;

#[tonic::async_trait]
impl Events for EventsService {
    type SubscribeStream = EventStream;

    async fn subscribe(
        &self,
        _req: Request<SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let rx = self.0.events.subscribe();
        let stream = futures_unfold(rx);
        Ok(Response::new(Box::pin(stream)))
    }
}

fn futures_unfold(
    rx: tokio::sync::broadcast::Receiver<Event>,
) -> impl Stream<Item = Result<Event, Status>> + Send {
    let (tx, out) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        let mut rx = rx;
        loop {
            let ev = match rx.recv().await {
                Ok(ev) => ev,
                Err(RecvError::Lagged(n)) => Event {
                    time: crate::now_millis() / 1000,
                    kind: "lagged".to_owned(),
                    object: String::new(),
                    detail: format!("{n} events missed"),
                },
                Err(RecvError::Closed) => break,
            };
            if tx.send(Ok(ev)).await.is_err() {
                break;
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(out)
}
