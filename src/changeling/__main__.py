from changeling.cli import main

raise SystemExit(main())
