//! The two servers under test and their command lines. Every Baton-specific assumption about
//! flags lives here.

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::binaries;

/// Which server a cluster runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// This project's server, `baton serve ...`.
    Baton,
    /// Debian's etcd 3.4, the reference implementation.
    Etcd,
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Baton => "baton",
            Backend::Etcd => "etcd",
        })
    }
}

/// The addresses of one member, fixed for the cluster's lifetime.
#[derive(Clone, Debug)]
pub struct MemberAddrs {
    pub name: String,
    pub client_port: u16,
    pub peer_port: u16,
}

impl MemberAddrs {
    pub fn client_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    pub fn peer_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.peer_port)
    }
}

/// What a member's command line is built from.
pub(crate) struct LaunchSpec<'a> {
    pub member: &'a MemberAddrs,
    pub all: &'a [MemberAddrs],
    pub data_dir: &'a Path,
    /// Unique per cluster so stray etcd peers of other tests can never join.
    pub cluster_token: &'a str,
    /// Joining a running cluster it was added to (`--initial-cluster-state existing`)
    /// rather than founding one.
    pub existing: bool,
}

impl Backend {
    pub fn program(self) -> Result<PathBuf> {
        match self {
            Backend::Baton => binaries::baton_bin(),
            Backend::Etcd => binaries::etcd_bin(),
        }
    }

    /// Arguments for the first start and for every restart (same data dir, no re-bootstrap:
    /// both servers ignore the bootstrap flags once the data dir holds state).
    pub(crate) fn args(self, spec: &LaunchSpec<'_>) -> Vec<OsString> {
        let initial_cluster = spec
            .all
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url()))
            .collect::<Vec<_>>()
            .join(",");
        let mut args: Vec<OsString> = Vec::new();
        if self == Backend::Baton {
            args.push("serve".into());
        }
        let common = [
            ("--name", spec.member.name.clone()),
            ("--listen-client-urls", spec.member.client_url()),
            ("--listen-peer-urls", spec.member.peer_url()),
            ("--initial-cluster", initial_cluster),
        ];
        for (flag, value) in common {
            args.push(flag.into());
            args.push(value.into());
        }
        args.push("--data-dir".into());
        args.push(spec.data_dir.into());
        if spec.existing {
            args.push("--initial-cluster-state".into());
            args.push("existing".into());
        }
        if self == Backend::Etcd {
            let etcd_only = [
                ("--advertise-client-urls", spec.member.client_url()),
                ("--initial-advertise-peer-urls", spec.member.peer_url()),
                ("--initial-cluster-token", spec.cluster_token.to_owned()),
            ];
            if !spec.existing {
                args.push("--initial-cluster-state".into());
                args.push("new".into());
            }
            for (flag, value) in etcd_only {
                args.push(flag.into());
                args.push(value.into());
            }
        }
        args
    }
}
