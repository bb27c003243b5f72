from mindstream.cli import main

raise SystemExit(main())
