//! The Images service: import from a path on the daemon's host, list, remove (with content
//! GC); pull, push and commit are in [`crate::transfer`]. The store's calls block, so they run
//! on tokio's blocking pool.

use std::path::PathBuf;
use std::sync::Arc;

use berth::image::import::{self, ImportOptions, PlatformChoice};
use berth::image::metadata::Descriptor;
use berth::image::progress::NoProgress;
use tonic::{Request, Response, Status};

use crate::daemon::{Daemon, caller};
use crate::proto::images_server::Images;
use crate::proto::{
    CommitImageRequest, Image, ImportImageRequest, ImportImageResponse, ListImagesRequest,
    ListImagesResponse, PullImageRequest, PushImageRequest, RemoveImageRequest,
    RemoveImageResponse,
};
use crate::transfer::{self, TransferStream};
use crate::{blocking, engine, invalid};

/// The Images service.
#[derive(Debug, Clone)]
pub struct ImagesService(pub Arc<Daemon>);

fn image(name: &str, target: &Descriptor) -> Image {
    Image {
        name: name.to_owned(),
        digest: target.digest.to_string(),
        media_type: target.media_type.clone(),
        size: target.size,
    }
}

#[tonic::async_trait]
impl Images for ImagesService {
    type PullStream = TransferStream;
    type PushStream = TransferStream;

    async fn pull(
        &self,
        req: Request<PullImageRequest>,
    ) -> Result<Response<Self::PullStream>, Status> {
        let who = caller(&req);
        transfer::pull(self.0.clone(), who, req.into_inner()).map(Response::new)
    }

    async fn push(
        &self,
        req: Request<PushImageRequest>,
    ) -> Result<Response<Self::PushStream>, Status> {
        let who = caller(&req);
        transfer::push(self.0.clone(), who, req.into_inner()).map(Response::new)
    }

    async fn commit(&self, req: Request<CommitImageRequest>) -> Result<Response<Image>, Status> {
        let who = caller(&req);
        transfer::commit(self.0.clone(), who, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn import(
        &self,
        req: Request<ImportImageRequest>,
    ) -> Result<Response<ImportImageResponse>, Status> {
        let who = caller(&req);
        let r = req.into_inner();
        let d = self.0.clone();
        let path = PathBuf::from(&r.path);
        let path_text = r.path.clone();
        let result = if !path.is_absolute() {
            Err(invalid(format!("path {:?} is not absolute", r.path)))
        } else {
            let root = d.root.clone();
            blocking(move || {
                let store = engine::open_store(&root)?;
                let name = (!r.name.is_empty()).then_some(r.name.as_str());
                let report = import::import(
                    &store,
                    &path,
                    &ImportOptions {
                        name,
                        platform: PlatformChoice::Host,
                        progress: &NoProgress,
                    },
                )?;
                Ok(report
                    .images
                    .iter()
                    .map(|i| image(&i.name, &i.target))
                    .collect::<Vec<_>>())
            })
            .await
        };
        if let Ok(images) = &result {
            for i in images {
                d.event("image-import", &i.name, i.digest.clone());
            }
        }
        let object = r_path_object(&result).unwrap_or(path_text);
        d.audited(who, "images.import", &object, result)
            .map(|images| Response::new(ImportImageResponse { images }))
    }

    async fn list(
        &self,
        _req: Request<ListImagesRequest>,
    ) -> Result<Response<ListImagesResponse>, Status> {
        let root = self.0.root.clone();
        let images = blocking(move || {
            let store = engine::open_store(&root)?;
            let mut all = store.images().list(&[])?;
            all.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(all.iter().map(|i| image(&i.name, &i.target)).collect())
        })
        .await?;
        Ok(Response::new(ListImagesResponse { images }))
    }

    async fn remove(
        &self,
        req: Request<RemoveImageRequest>,
    ) -> Result<Response<RemoveImageResponse>, Status> {
        let who = caller(&req);
        let name = req.into_inner().name;
        let d = self.0.clone();
        let root = d.root.clone();
        let n = name.clone();
        let result = blocking(move || {
            let normalized = berth::oci::Reference::parse(&n)?.to_string();
            let store = engine::open_store(&root)?;
            store.images().delete(&normalized)?;
            let report = engine::collect_garbage(&root, &store)?;
            Ok(report.blobs as u64)
        })
        .await;
        if result.is_ok() {
            d.event("image-remove", &name, String::new());
        }
        d.audited(who, "images.remove", &name, result)
            .map(|removed_blobs| Response::new(RemoveImageResponse { removed_blobs }))
    }
}

/// The audit object of an import: the names imported (None when it failed).
fn r_path_object(result: &Result<Vec<Image>, Status>) -> Option<String> {
    let images = result.as_ref().ok()?;
    Some(
        images
            .iter()
            .map(|i| i.name.as_str())
            .collect::<Vec<_>>()
            .join(","),
    )
}
