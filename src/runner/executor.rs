//! The seam between the queue and where jobs' containers run: the `Executor` trait, which the
//! queue, recovery and the debug archives talk to without knowing which engine is behind it;
//! `connect` picks the one the settings name.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::container::ContainerSpec;
use super::size::Size;
use super::{ImageFailure, Run, RunOutcome, Runner, RunnerError, Task};
use crate::model::Job;
use crate::settings::{self, Component, ExecutorKind, Settings};

/// A future an executor hands back: boxed, so that `Executor` can be used as `dyn Executor`.
pub type Pending<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where the containers of jobs run: one engine (`Runner`, the Docker engine on this host), or
/// a cluster behind one manager. Each image of a job is one unit of work in the executor (a
/// container, a service), known to the queue only by the id the executor gave it, which the
/// queue stores before the unit starts.
///
/// Every executor keeps the queue's promises: exit classification (`outcome::classify`), the
/// image's timeout and a kill with `kill_grace` (stop, then force), every output line in order
/// through the `RunObserver`, resuming after the stored lines when it re-attaches, no unit
/// started twice, and none left behind (`ours` lists what a sweep may remove).
pub trait Executor: Send + Sync {
    /// Whether the executor's engine (or cluster manager) answers now; while it does not, jobs
    /// stay `created`.
    fn ping(&self) -> Pending<'_, Result<(), RunnerError>>;

    /// Makes sure `image` of `component` can run before a job starts: a local image present,
    /// a registry's image pulled (progress to `told`).
    fn ensure_image<'a>(
        &'a self,
        image: &'a str,
        component: &'a Component,
        settings: &'a Settings,
        told: &'a (dyn Fn(&str) + Sync),
    ) -> Pending<'a, Result<(), ImageFailure>>;

    /// The default images (`image:tag`) of `components` the executor lacks.
    fn missing_images<'a>(
        &'a self,
        components: &'a [Component],
    ) -> Pending<'a, Result<Vec<(&'a Component, String)>, RunnerError>>;

    /// Prepares the container of `image` for `job`'s `task`: what `start` runs, and what a
    /// debug stage archive records for `jobq replay`.
    fn prepare(
        &self,
        job: &Job,
        task: &Task,
        image: &str,
        component: &Component,
        size: Size,
        settings: &Settings,
    ) -> std::io::Result<ContainerSpec>;

    /// Creates the unit for `run` (its id to `RunObserver::container_created` before it
    /// starts), starts it, follows its output into events, waits for its end, stops it at its
    /// timeout or when `cancel` fires (`kill_grace`, then forced), and classifies the end. The
    /// unit stays until `remove`: the queue removes it once the result is stored.
    fn start<'a>(&'a self, run: &'a Run<'a>, cancel: CancellationToken) -> Pending<'a, RunOutcome>;

    /// Takes over the unit `id` a previous jobq process started for `run`: starts it if it
    /// never started, follows its output after the lines already stored, and goes on as
    /// `start` does. The unit never runs twice.
    fn reattach<'a>(
        &'a self,
        run: &'a Run<'a>,
        id: &'a str,
        cancel: CancellationToken,
    ) -> Pending<'a, RunOutcome>;

    /// Removes the unit `id`, whatever its state; a failure is logged, not fatal.
    fn remove<'a>(&'a self, id: &'a str) -> Pending<'a, ()>;

    /// Every unit of this store, as (unit id, job id), for the sweep of leftovers.
    fn ours(&self) -> Pending<'_, Result<Vec<(String, String)>, RunnerError>>;

    /// Makes sure, at start, that every place a unit may run sees `data_dir` at its path (job
    /// folders are bind-mounted from there); the daemon does not start when one does not.
    fn check_data_dir<'a>(&'a self, settings: &'a Settings)
        -> Pending<'a, Result<(), RunnerError>>;
}

/// Whether this jobq can run the executor `settings.executor` names (a `tcp://` manager's TLS
/// files hold what they must); the daemon asks before it writes anything.
pub fn check(settings: &Settings) -> Result<(), RunnerError> {
    match &settings.executor {
        ExecutorKind::Swarm(settings::Swarm { tls: Some(tls), .. }) => super::tls::check(tls),
        ExecutorKind::Docker | ExecutorKind::Swarm(_) => Ok(()),
    }
}

/// The executor `settings.executor` names: `runner` (the Docker engine of this host, which
/// synchronous actions always use), or a swarm through its manager.
pub fn connect(
    settings: &Settings,
    runner: Arc<Runner>,
    instance_id: &str,
) -> Result<Arc<dyn Executor>, RunnerError> {
    check(settings)?;
    Ok(match &settings.executor {
        ExecutorKind::Docker => runner,
        ExecutorKind::Swarm(swarm) => Arc::new(super::swarm::Swarm::new(swarm, instance_id)?),
    })
}

impl Executor for Runner {
    fn ping(&self) -> Pending<'_, Result<(), RunnerError>> {
        Box::pin(Runner::ping(self))
    }

    fn ensure_image<'a>(
        &'a self,
        image: &'a str,
        component: &'a Component,
        settings: &'a Settings,
        told: &'a (dyn Fn(&str) + Sync),
    ) -> Pending<'a, Result<(), ImageFailure>> {
        Box::pin(Runner::ensure_image(self, image, component, settings, told))
    }

    fn missing_images<'a>(
        &'a self,
        components: &'a [Component],
    ) -> Pending<'a, Result<Vec<(&'a Component, String)>, RunnerError>> {
        Box::pin(Runner::missing_images(self, components))
    }

    fn prepare(
        &self,
        job: &Job,
        task: &Task,
        image: &str,
        component: &Component,
        size: Size,
        settings: &Settings,
    ) -> std::io::Result<ContainerSpec> {
        let user = self.identity(settings)?.user;
        let env = super::workspace::environment(job, component, task, settings);
        Ok(ContainerSpec::new(
            image, component, size, &user, env, settings,
        ))
    }

    fn start<'a>(&'a self, run: &'a Run<'a>, cancel: CancellationToken) -> Pending<'a, RunOutcome> {
        Box::pin(self.run(run, cancel))
    }

    fn reattach<'a>(
        &'a self,
        run: &'a Run<'a>,
        id: &'a str,
        cancel: CancellationToken,
    ) -> Pending<'a, RunOutcome> {
        Box::pin(self.attach(run, id, cancel))
    }

    fn remove<'a>(&'a self, id: &'a str) -> Pending<'a, ()> {
        Box::pin(self.remove_container(id))
    }

    fn ours(&self) -> Pending<'_, Result<Vec<(String, String)>, RunnerError>> {
        Box::pin(self.labelled_containers())
    }

    /// The engine's containers mount this host's own paths.
    fn check_data_dir<'a>(&'a self, _: &'a Settings) -> Pending<'a, Result<(), RunnerError>> {
        Box::pin(async { Ok(()) })
    }
}
