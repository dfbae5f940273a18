//! Fallible printing to standard output: [`out!`](crate::out) and [`outln!`](crate::outln) are
//! `print!` and `println!` that return an error instead of panicking when the output cannot be
//! written (a closed pipe with SIGPIPE ignored, a full disk, `> /dev/full`). Each call flushes,
//! so a device that refuses the bytes is noticed at the print that sent them.

use std::fmt;
use std::io::Write;

/// Writes `args` to `w` and flushes it; a failure is "writing to standard output: CAUSE".
pub fn write_to(w: &mut dyn Write, args: fmt::Arguments<'_>) -> anyhow::Result<()> {
    w.write_fmt(args)
        .and_then(|()| w.flush())
        .map_err(|e| anyhow::anyhow!("writing to standard output: {e}"))
}

/// Writes `args` to standard output (locked for the call) and flushes it.
pub fn print(args: fmt::Arguments<'_>) -> anyhow::Result<()> {
    write_to(&mut std::io::stdout().lock(), args)
}

/// `print!` that returns `anyhow::Result<()>` instead of panicking on a write error.
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::output::print(::std::format_args!($($arg)*))
    };
}

/// `println!` that returns `anyhow::Result<()>` instead of panicking on a write error.
#[macro_export]
macro_rules! outln {
    () => {
        $crate::output::print(::std::format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::output::print(::std::format_args!("{}\n", ::std::format_args!($($arg)*)))
    };
}

#[cfg(test)]
mod tests {
    use std::io::{self, Write};

    /// A device that takes `room` bytes, then reports itself full.
    struct Full {
        room: usize,
    }

    impl Write for Full {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.room == 0 {
                return Err(io::Error::from_raw_os_error(libc::ENOSPC));
            }
            let n = buf.len().min(self.room);
            self.room -= n;
            Ok(n)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_full_device_is_an_error_naming_standard_output() {
        let mut dev = Full { room: 4 };
        super::write_to(&mut dev, format_args!("abc")).unwrap();
        let e = super::write_to(&mut dev, format_args!("defgh")).unwrap_err();
        let e = e.to_string();
        assert!(e.starts_with("writing to standard output: "), "{e}");
        assert!(e.contains("No space left on device"), "{e}");
    }

    /// A buffered writer whose device is full fails at the flush, within the same call.
    #[test]
    fn the_flush_reports_what_the_buffer_held_back() {
        let mut dev = io::BufWriter::new(Full { room: 0 });
        let e = super::write_to(&mut dev, format_args!("x\n")).unwrap_err();
        assert!(e.to_string().contains("standard output"), "{e}");
    }
}
