//! TEST PROGRAM — the ports of a configured Talos control-plane node that an extension service can
//! see without credentials, so that `talos-agent report`'s bootstrap rule runs against real
//! listeners:
//! - `standin.role=controlplane` (with `standin.apid=configured`): trustd's `:50001` accepts
//!   connections, as on every configured control-plane node (Talos v1.10
//!   `internal/app/machined/pkg/runtime/v1alpha1/v1alpha1_sequencer_tasks.go`, `StartAllServices`
//!   starts trustd for the control-plane machine type);
//! - `standin.etcd=running` in addition: etcd's `:2379` accepts connections, as once the node was
//!   bootstrapped or joined. Without it nothing listens there, as on a control-plane node that
//!   was never bootstrapped: Talos's etcd service waits in its `PreFunc` and starts the etcd
//!   process only afterwards (`internal/app/machined/pkg/system/services/etcd.go`).
//!
//! Nothing is spoken on these ports (trustd is gRPC over TLS, etcd gRPC over mutual TLS): a
//! connection is accepted and closed, which is all a credential-free probe can see anyway.

use std::net::TcpListener;

use crate::{say, Result};

fn has(cmdline: &str, arg: &str) -> bool {
    cmdline.split_whitespace().any(|a| a == arg)
}

fn listen(port: u16, what: &str) -> Result<()> {
    let listener = TcpListener::bind(("0.0.0.0", port)).map_err(|e| format!("{what}: listening on :{port}: {e}"))?;
    say(&format!("{what} listening on :{port}"));
    std::thread::spawn(move || for _ in listener.incoming() {});
    Ok(())
}

/// Starts the listeners the command line asks for (see the module docs).
pub fn start(cmdline: &str) -> Result<()> {
    if !has(cmdline, "standin.role=controlplane") {
        return Ok(());
    }
    if crate::apid::mode(cmdline) != "configured" {
        return Err("standin.role=controlplane needs standin.apid=configured (trustd runs once configured)".into());
    }
    listen(50001, "trustd")?;
    if has(cmdline, "standin.etcd=running") {
        listen(2379, "etcd")?;
    }
    Ok(())
}
