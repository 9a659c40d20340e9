from vipd.cli import vipd_main

raise SystemExit(vipd_main())
