from qtelemetry.cli import main

raise SystemExit(main())
