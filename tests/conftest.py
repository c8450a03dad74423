"""Test-session setup shared by every test module."""

import signal

# A test run started in the background of a non-interactive shell (`make test &`, a CI
# step launched that way) inherits SIGINT as ignored; Python then installs no
# KeyboardInterrupt handler, `_thread.interrupt_main()` does nothing, and every child
# process inherits the ignored signal. The Ctrl-C tests need the default back.
signal.signal(signal.SIGINT, signal.default_int_handler)
