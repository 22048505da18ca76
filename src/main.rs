use std::process::ExitCode;

fn main() -> ExitCode {
    wanx::run(std::env::args_os())
}
