fn main() {
    std::process::exit(herdtrace::cli::main());
}
