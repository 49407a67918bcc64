/* nanny: the Service Nanny daemon and its command line. Thin: parses the subcommand and
 * hands over. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "cli/check.h"
#include "cli/ctl.h"
#include "cli/keys.h"
#include "cli/mcp_stdio.h"
#include "cli/scaffold.h"
#include "core/config.h"
#include "daemon.h"
#include "drivers/drivers.h"
#include "lib/logfile.h"
#include "version.h"

static void usage(FILE *out)
{
    fprintf(out, "usage: nanny COMMAND [options]\n"
                 "commands:\n"
                 "  serve      run the daemon (nanny serve --help for its options)\n"
                 "  new        create a service folder from the template (nanny new --help)\n"
                 "  keys       add, list and remove API keys (nanny keys --help)\n"
                 "  ls, ps     list the services (also: health, status, start, stop, restart,\n"
                 "             rediscover, logs; nanny CMD --help)\n"
                 "  check      validate every manifest, no daemon needed (nanny check --help)\n"
                 "  mcp        an MCP server on stdio for AI agents, a bridge to the daemon\n"
                 "             (nanny mcp --help)\n"
                 "  version    print the version\n");
}

int main(int argc, char **argv)
{
    struct config config;
    char err[1024];
    int r;

    drivers_set(drivers_builtin); /* before any manifest is read */
    drivers_set_self("/proc/self/exe");
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (strcmp(argv[1], "version") == 0 || strcmp(argv[1], "--version") == 0) {
        printf("nanny %s\n", NANNY_VERSION);
        return 0;
    }
    if (strcmp(argv[1], "help") == 0 || strcmp(argv[1], "--help") == 0 ||
        strcmp(argv[1], "-h") == 0) {
        usage(stdout);
        return 0;
    }
    if (strcmp(argv[1], "new") == 0)
        return scaffold_main(argc - 1, argv + 1);
    if (strcmp(argv[1], "keys") == 0)
        return keys_main(argc - 1, argv + 1);
    if (strcmp(argv[1], "check") == 0)
        return check_main(argc - 1, argv + 1);
    if (strcmp(argv[1], "mcp") == 0)
        return mcp_stdio_main(argc - 1, argv + 1);
    if (ctl_is_command(argv[1]))
        return ctl_main(argc - 1, argv + 1);
    if (strcmp(argv[1], "log-writer") == 0) /* the process driver's logger, not for people */
        return logfile_main(argc - 1, argv + 1);
    if (strcmp(argv[1], "serve") != 0) {
        fprintf(stderr, "nanny: unknown command '%s'\n", argv[1]);
        usage(stderr);
        return 2;
    }

    r = config_load(&config, argc - 1, argv + 1, err, sizeof(err));
    if (r == -ECANCELED) {
        config_done(&config);
        return 0;
    }
    if (r < 0) {
        fprintf(stderr, "nanny: %s\n", err);
        config_done(&config);
        return 2;
    }
    r = daemon_run(&config);
    config_done(&config);
    return r;
}
