from jobgrove.cli.main import main

raise SystemExit(main())
