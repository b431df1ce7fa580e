//! The Snapshots service: list, stat and remove snapshots of the overlay or native
//! snapshotter under the daemon's root.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use berth::snapshot::Info;
use tonic::{Request, Response, Status};

use crate::daemon::{Daemon, caller};
use crate::proto::snapshots_server::Snapshots;
use crate::proto::{
    ListSnapshotsRequest, ListSnapshotsResponse, RemoveSnapshotRequest, RemoveSnapshotResponse,
    Snapshot, StatSnapshotRequest,
};
use crate::{blocking, engine, invalid};

/// The Snapshots service.
#[derive(Debug, Clone)]
pub struct SnapshotsService(pub Arc<Daemon>);

fn snapshotter_name(name: &str) -> Result<String, Status> {
    match name {
        "" => Ok("overlay".to_owned()),
        "overlay" | "native" => Ok(name.to_owned()),
        other => Err(invalid(format!(
            "unknown snapshotter {other:?} (overlay or native)"
        ))),
    }
}

fn secs(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn snapshot(i: &Info) -> Snapshot {
    Snapshot {
        name: i.name.clone(),
        kind: i.kind.as_str().to_ascii_lowercase(),
        parent: i.parent.clone(),
        labels: i.labels.clone().into_iter().collect(),
        created: secs(i.created),
        updated: secs(i.updated),
    }
}

#[tonic::async_trait]
impl Snapshots for SnapshotsService {
    async fn list(
        &self,
        req: Request<ListSnapshotsRequest>,
    ) -> Result<Response<ListSnapshotsResponse>, Status> {
        let name = snapshotter_name(&req.into_inner().snapshotter)?;
        let root = self.0.root.clone();
        let snapshots = blocking(move || {
            let sn = engine::open_snapshotter(&root, &name)?;
            let mut out = Vec::new();
            sn.walk(&[], &mut |i| {
                out.push(snapshot(i));
                Ok(())
            })?;
            out.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(out)
        })
        .await?;
        Ok(Response::new(ListSnapshotsResponse { snapshots }))
    }

    async fn stat(&self, req: Request<StatSnapshotRequest>) -> Result<Response<Snapshot>, Status> {
        let r = req.into_inner();
        let name = snapshotter_name(&r.snapshotter)?;
        if r.key.is_empty() {
            return Err(invalid("empty snapshot key"));
        }
        let root = self.0.root.clone();
        let info = blocking(move || {
            let sn = engine::open_snapshotter(&root, &name)?;
            Ok(snapshot(&sn.stat(&r.key)?))
        })
        .await?;
        Ok(Response::new(info))
    }

    async fn remove(
        &self,
        req: Request<RemoveSnapshotRequest>,
    ) -> Result<Response<RemoveSnapshotResponse>, Status> {
        let who = caller(&req);
        let r = req.into_inner();
        let key = r.key.clone();
        let root = self.0.root.clone();
        let result = match snapshotter_name(&r.snapshotter) {
            Err(e) => Err(e),
            Ok(_) if r.key.is_empty() => Err(invalid("empty snapshot key")),
            Ok(name) => {
                blocking(move || {
                    let sn = engine::open_snapshotter(&root, &name)?;
                    sn.remove(&r.key)?;
                    Ok(())
                })
                .await
            }
        };
        self.0
            .audited(who, "snapshots.remove", &key, result)
            .map(|()| Response::new(RemoveSnapshotResponse {}))
    }
}
