//! A generated design of any size, for benchmarks and tests.

use std::fmt::Write;

/// Files of a generated design with `hosts` hosts and `profiles` host profiles that
/// validates clean. For benchmarks and tests only.
///
/// One site, three networks (provisioning, storage, BMC), one link, one hardware profile,
/// one boot profile with a kickstart template. Profiles are three levels deep (ten roots,
/// then children, then grandchildren); host `i` uses profile `i % profiles`, so every
/// profile is used. Hosts are spread over files of 500, 40 to a rack. Up to 60,000 hosts.
pub fn generate(hosts: usize, profiles: usize) -> Vec<(String, String)> {
    let mut files = Vec::new();
    files.push(("site.yaml".to_string(), BASE.to_string()));
    let mut p = String::new();
    for k in 0..profiles {
        let _ = writeln!(p, "---\nkind: HostProfile\nname: p{k}\nspec:");
        if k < 10 {
            p.push_str(ROOT_PROFILE);
            let _ = writeln!(p, "  labels: {{tier: t{k}, role: generic}}");
        } else {
            let parent = if k < 100 { k % 10 } else { 10 + k % 90 };
            let _ = writeln!(p, "  parent: p{parent}");
            let _ = writeln!(p, "  labels: {{role: r{k}, \"!tier\": ~}}");
            let _ = writeln!(p, "  kernel_params: [\"!quiet\", \"p{k}.flag=1\"]");
            if k >= 100 {
                p.push_str(
                    "  storage:\n    disks:\n      - name: sda\n        partitions:\n          - {name: root, size: \">60G\"}\n          - \"!swap\"\n",
                );
            }
        }
    }
    files.push(("profiles.yaml".to_string(), p));
    for (chunk, start) in (0..hosts).step_by(500).enumerate() {
        let mut h = String::new();
        for i in start..hosts.min(start + 500) {
            let prov = 10 + i as u32;
            let bmc = 10 + i as u32;
            let _ = writeln!(h, "---\nkind: Host\nname: n{i:05}\nspec:");
            let _ = writeln!(h, "  site: dc1\n  rack: r{:03}", i / 40);
            if profiles > 0 {
                let _ = writeln!(h, "  profile: p{}", i % profiles);
            } else {
                h.push_str(ROOT_PROFILE);
            }
            let _ = writeln!(
                h,
                "  interfaces:\n    - {{name: eth0, mac: \"52:54:00:{:02x}:{:02x}:{:02x}\", address: 10.80.{}.{}}}",
                (i >> 16) & 0xff,
                (i >> 8) & 0xff,
                i & 0xff,
                prov >> 8,
                prov & 0xff
            );
            let _ = writeln!(h, "  bmc: {{address: 10.81.{}.{}}}", bmc >> 8, bmc & 0xff);
            let _ = writeln!(h, "  labels: {{batch: b{}}}", i % 7);
        }
        files.push((format!("hosts/hosts-{chunk:03}.yaml"), h));
    }
    files
}

const ROOT_PROFILE: &str = r#"  hardware_profile: gen-server
  boot_profile: gen-install
  interfaces:
    - {name: eth0, network: prov, link: prov-link}
  storage:
    disks:
      - name: sda
        device: boot-disk
        size: 480G
        partitions:
          - {name: efi, size: 512M, filesystem: vfat, mountpoint: /boot/efi}
          - {name: swap, size: 4G, filesystem: swap}
          - {name: root, size: ">40G", filesystem: xfs, mountpoint: /}
  kernel_params: [quiet, console=ttyS0]
  bmc: {type: ipmi, username: admin, credential: {env: BMC_PASSWORD}}
"#;

const BASE: &str = r#"kind: Site
name: dc1
spec:
  id: dc1
  agent_endpoint: https://agent.dc1.example:8443
  dhcp_mode: server
  boot_assets: http://10.80.0.2/assets
---
kind: Network
name: prov
spec:
  cidr: 10.80.0.0/16
  gateway: 10.80.0.1
  dns: [10.80.0.2]
  mtu: 1500
  ranges:
    - {kind: reserved, start: 10.80.0.1, end: 10.80.0.9}
    - {kind: static, start: 10.80.0.10, end: 10.80.239.255}
    - {kind: dhcp, start: 10.80.240.0, end: 10.80.255.254}
---
kind: Network
name: bmc
spec:
  cidr: 10.81.0.0/16
  gateway: 10.81.0.1
---
kind: Network
name: storage
spec:
  cidr: 10.82.0.0/16
  vlan: 82
  mtu: 9000
---
kind: NetworkLink
name: prov-link
spec:
  mtu: 9000
  trunk: true
  networks: [prov, storage]
  bond: {mode: 802.3ad, options: {lacp_rate: fast, miimon: 100, xmit_hash_policy: layer3+4}}
---
kind: HardwareProfile
name: gen-server
spec:
  vendor: Generic
  model: G1
  boot_mode: uefi
  pxe_interface: eth0
  device_aliases: {boot-disk: /dev/sda}
---
kind: BootProfile
name: gen-install
spec:
  kernel: images/vmlinuz
  initrd: [images/initrd.img]
  cmdline: inst.ks=http://10.80.0.2/ks
  assets:
    - {path: images/vmlinuz, sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08}
    - {path: images/initrd.img, sha256: 60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752}
  unattended:
    format: kickstart
    template: |
      network --hostname={{ host.name }}
      {% for i in host.interfaces %}network --device={{ i.mac }} --ip={{ i.address }} --netmask={{ i.netmask }}
      {% endfor %}bootloader --append="{{ host.kernel_params | join(' ') }}"
      # site {{ site.name }} rack {{ host.rack }}
"#;
