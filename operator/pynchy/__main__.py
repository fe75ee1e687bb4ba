from pynchy.cli import main

raise SystemExit(main())
