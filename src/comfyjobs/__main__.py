from comfyjobs.cli.main import main

raise SystemExit(main())
