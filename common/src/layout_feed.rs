//! The layout service over a layout history someone follows: the control plane serves
//! the history it owns, a data node the last one it received (so a frontend that starts
//! while the control plane is away still gets a layout).

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use hangar_proto::control::layout_service_server::{LayoutService, LayoutServiceServer};
use hangar_proto::control::{GetLayoutRequest, LayoutHistory};
use tokio::sync::watch;
use tonic::service::interceptor::InterceptedService;
use tonic::{Request, Response, Status};

use crate::rpc::{RequireHeader, require_secret};

pub struct LayoutFeed {
    history: watch::Receiver<Arc<LayoutHistory>>,
}

pub type LayoutServer = InterceptedService<LayoutServiceServer<LayoutFeed>, RequireHeader>;

impl LayoutFeed {
    /// The layout service over `history`, for callers with the cluster secret.
    pub fn server(history: watch::Receiver<Arc<LayoutHistory>>, secret: &str) -> LayoutServer {
        InterceptedService::new(LayoutServiceServer::new(LayoutFeed { history }), require_secret(secret))
    }
}

type LayoutStream = Pin<Box<dyn Stream<Item = Result<LayoutHistory, Status>> + Send>>;

#[tonic::async_trait]
impl LayoutService for LayoutFeed {
    async fn get_layout(&self, _: Request<GetLayoutRequest>) -> Result<Response<LayoutHistory>, Status> {
        Ok(Response::new(self.history.borrow().as_ref().clone()))
    }

    type WatchLayoutStream = LayoutStream;

    /// The current history, then every change.
    async fn watch_layout(&self, _: Request<GetLayoutRequest>) -> Result<Response<LayoutStream>, Status> {
        let rx = self.history.clone();
        let stream = futures::stream::unfold((rx, true), |(mut rx, first)| async move {
            if !first && rx.changed().await.is_err() {
                return None;
            }
            let l = rx.borrow_and_update().as_ref().clone();
            Some((Ok(l), (rx, false)))
        });
        Ok(Response::new(Box::pin(stream)))
    }
}
