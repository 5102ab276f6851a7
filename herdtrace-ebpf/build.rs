use which::which;

/// Rebuild the eBPF object when bpf-linker changes (a new LLVM can change the output).
fn main() {
    // aya-build passes `--cfg bpf_target_arch="..."` (see kread::SYSCALL_ARG0).
    println!("cargo::rustc-check-cfg=cfg(bpf_target_arch, values(any()))");
    let bpf_linker = which("bpf-linker").expect("bpf-linker not found: run `cargo xtask setup`");
    println!(
        "cargo:rerun-if-changed={}",
        bpf_linker.to_str().unwrap_or_default()
    );
}
