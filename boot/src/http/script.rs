//! iPXE scripts.

use super::{BootPlan, Mac};

/// iPXE takes a script line as given; a newline or a stray `${` in data from the design
/// would change the script. Such characters are dropped.
fn clean(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_control())
        .collect::<String>()
        .replace("${", "$ {")
}

/// The last path segment of a URL: the name iPXE gives an image, which the kernel's EFI
/// stub needs as `initrd=NAME` to find each initrd.
fn image_name(url: &str, index: usize) -> String {
    let name = url
        .split(['?', '#'])
        .next()
        .unwrap_or("")
        .rsplit('/')
        .next()
        .unwrap_or("")
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        .collect::<String>();
    if name.is_empty() {
        format!("initrd{index}")
    } else {
        name
    }
}

/// The script that boots a node into its boot profile, with the callback URL and token on
/// the kernel command line. If the kernel does not boot, it retries the whole chain.
pub fn provision_script(p: &BootPlan) -> String {
    let mut s = String::from("#!ipxe\n");
    s.push_str(&format!(
        "# lariat: provision {} for run {}\n",
        clean(&p.host),
        clean(&p.run)
    ));
    let names: Vec<String> = p
        .initrds
        .iter()
        .enumerate()
        .map(|(i, u)| image_name(u, i))
        .collect();
    let mut cmdline = clean(&p.cmdline);
    for n in &names {
        cmdline.push_str(&format!(" initrd={n}"));
    }
    cmdline.push_str(&format!(
        " lariat.callback={} lariat.token={} lariat.host={}",
        clean(&p.callback),
        clean(&p.token),
        clean(&p.host)
    ));
    s.push_str(&format!(
        "kernel {} {} || goto failed\n",
        clean(&p.kernel),
        cmdline.trim()
    ));
    for (url, name) in p.initrds.iter().zip(&names) {
        s.push_str(&format!(
            "initrd --name {name} {} || goto failed\n",
            clean(url)
        ));
    }
    s.push_str("boot || goto failed\n");
    s.push_str(":failed\necho lariat: boot failed; trying again in 10 seconds\nsleep 10\nreboot\n");
    s
}

/// The script for a node nothing waits for: boot the local disk. BIOS boots the first
/// disk; UEFI returns to the firmware, which takes its next boot entry.
pub fn local_disk_script(mac: &Mac, reason: &str) -> String {
    format!(
        "#!ipxe\n# lariat: {mac}: {}; booting from local disk\n\
         iseq ${{platform}} efi && goto efi ||\n\
         sanboot --no-describe --drive 0x80 || goto efi\n\
         :efi\nexit\n",
        clean(reason)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> BootPlan {
        BootPlan {
            host: "node01".into(),
            run: "0192".into(),
            kernel: "http://10.77.0.1:7300/boot/assets/debian/vmlinuz".into(),
            initrds: vec![
                "http://10.77.0.1:7300/boot/assets/debian/initrd.gz".into(),
                "http://cdn.example.com/extra.cpio?x=1".into(),
            ],
            cmdline: "console=ttyS0 quiet".into(),
            callback: "http://10.77.0.1:7300/v1/state".into(),
            token: "nt_abc".into(),
        }
    }

    #[test]
    fn the_provision_script_names_each_initrd_for_the_efi_stub() {
        let s = provision_script(&plan());
        assert!(s.starts_with("#!ipxe\n"));
        assert!(s.contains(
            "kernel http://10.77.0.1:7300/boot/assets/debian/vmlinuz console=ttyS0 quiet initrd=initrd.gz initrd=extra.cpio lariat.callback=http://10.77.0.1:7300/v1/state lariat.token=nt_abc lariat.host=node01 || goto failed\n"
        ), "{s}");
        assert!(s.contains("initrd --name initrd.gz http://10.77.0.1:7300/boot/assets/debian/initrd.gz || goto failed\n"), "{s}");
        assert!(
            s.contains("initrd --name extra.cpio http://cdn.example.com/extra.cpio?x=1"),
            "{s}"
        );
        assert!(s.contains("boot || goto failed\n"));
    }

    #[test]
    fn design_data_cannot_inject_script_lines() {
        let mut p = plan();
        p.cmdline = "quiet\nshell\n${evil}".into();
        let s = provision_script(&p);
        assert!(!s.contains("\nshell"), "{s}");
        assert!(!s.contains("${evil}"), "{s}");
    }

    #[test]
    fn the_local_disk_script_works_on_bios_and_uefi() {
        let s = local_disk_script(&Mac([0x52, 0x54, 0, 1, 2, 3]), "no step waits");
        assert!(s.contains("# lariat: 52:54:00:01:02:03: no step waits; booting from local disk"));
        assert!(s.contains("iseq ${platform} efi && goto efi ||"));
        assert!(s.contains("sanboot --no-describe --drive 0x80"));
        assert!(s.trim_end().ends_with("exit"));
    }
}
