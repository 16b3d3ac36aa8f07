fn main() -> std::process::ExitCode {
    dermedge::cli::main()
}
