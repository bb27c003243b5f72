from mindstream.app.cli import main

raise SystemExit(main())
