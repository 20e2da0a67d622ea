from jobgrove.cli import main

raise SystemExit(main())
