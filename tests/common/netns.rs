//! Network namespaces for tests of real partitions: every node in a namespace of its
//! own, joined to a bridge by a veth pair, on an address that exists only inside the
//! namespaces the test made (10.213.X.0/24); partitions are nftables rules inside a
//! node's namespace. Needs root, iproute2 and nftables (`scripts/test` installs them).

use std::net::Ipv4Addr;
use std::process::Command;

/// Runs a command; its stderr when it fails.
pub fn run(args: &[&str]) -> Result<(), String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("{}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The namespaces, veth pairs and bridge of one test; removed when dropped.
pub struct Net {
    /// The third octet of the subnet, also in every name this test makes.
    id: u8,
    nodes: usize,
}

impl Net {
    /// Makes a bridge and `nodes` namespaces, or says why it cannot.
    pub fn make(nodes: usize) -> Result<Net, String> {
        for tool in ["ip", "nft"] {
            if Command::new(tool).arg("-V").output().is_err() {
                return Err(format!(
                    "`{tool}` is not installed (scripts/test installs it)"
                ));
            }
        }
        // A subnet and names no other test process uses: the bridge's name is the lock.
        let start = (std::process::id() % 200) as u8;
        for offset in 0..200u8 {
            let id = (start.wrapping_add(offset) % 200) + 20;
            let bridge = format!("wbr{id}");
            match run(&["ip", "link", "add", &bridge, "type", "bridge"]) {
                Ok(()) => {}
                Err(e) if e.contains("exists") => continue,
                // Not root, or no namespaces in this container.
                Err(e) => return Err(e),
            }
            let net = Net { id, nodes };
            net.wire()?;
            return Ok(net);
        }
        Err("no free subnet among 10.213.20-219.0/24".into())
    }

    pub fn bridge(&self) -> String {
        format!("wbr{}", self.id)
    }

    pub fn ns(&self, i: usize) -> String {
        format!("w{}n{i}", self.id)
    }

    pub fn ip(&self, i: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, 213, self.id, i as u8 + 1)
    }

    fn wire(&self) -> Result<(), String> {
        let bridge = self.bridge();
        let gateway = format!("10.213.{}.254/24", self.id);
        run(&["ip", "addr", "add", &gateway, "dev", &bridge])?;
        run(&["ip", "link", "set", &bridge, "up"])?;
        for i in 0..self.nodes {
            let (ns, host, inside) = (
                self.ns(i),
                format!("w{}h{i}", self.id),
                format!("w{}p{i}", self.id),
            );
            run(&["ip", "netns", "add", &ns])?;
            run(&[
                "ip", "link", "add", &host, "type", "veth", "peer", "name", &inside,
            ])?;
            run(&["ip", "link", "set", &inside, "netns", &ns])?;
            run(&["ip", "link", "set", &host, "master", &bridge])?;
            run(&["ip", "link", "set", &host, "up"])?;
            let addr = format!("{}/24", self.ip(i));
            run(&["ip", "-n", &ns, "addr", "add", &addr, "dev", &inside])?;
            run(&["ip", "-n", &ns, "link", "set", &inside, "up"])?;
            run(&["ip", "-n", &ns, "link", "set", "lo", "up"])?;
        }
        Ok(())
    }

    /// Node `i` no longer exchanges anything with the nodes `peers` (both ways).
    pub fn cut(&self, i: usize, peers: &[usize]) {
        let ns = self.ns(i);
        let set: Vec<String> = peers.iter().map(|p| self.ip(*p).to_string()).collect();
        let set = format!("{{ {} }}", set.join(", "));
        let rules = format!(
            "table inet partition {{\n\
               chain input {{ type filter hook input priority 0; ip saddr {set} drop; }}\n\
               chain output {{ type filter hook output priority 0; ip daddr {set} drop; }}\n\
             }}\n"
        );
        let file = std::env::temp_dir().join(format!("{ns}.nft"));
        std::fs::write(&file, rules).expect("nft rules file");
        run(&[
            "ip",
            "netns",
            "exec",
            &ns,
            "nft",
            "-f",
            file.to_str().unwrap(),
        ])
        .expect("nftables rules in the namespace");
    }

    /// Node `i` exchanges with everyone again.
    pub fn heal(&self, i: usize) {
        let ns = self.ns(i);
        let _ = run(&[
            "ip",
            "netns",
            "exec",
            &ns,
            "nft",
            "delete",
            "table",
            "inet",
            "partition",
        ]);
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for i in 0..self.nodes {
            // Deleting the namespace deletes the veth inside it, and with it its pair.
            let _ = run(&["ip", "netns", "del", &self.ns(i)]);
        }
        let _ = run(&["ip", "link", "del", &self.bridge()]);
    }
}
