from .cli import main
from .runtime.exiting import exit_now

exit_now(main())
