/* libFuzzer target for the MCP tools' argument checks: any JSON object against every
 * tool's inputSchema. */
#include <stddef.h>
#include <stdint.h>

#include "http/mcp_internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static json_t *list;
    json_t *args = json_loadb((const char *)data, size, JSON_DECODE_ANY, NULL), *tool;
    char err[512];
    size_t i;

    if (!list)
        list = mcp_tools_list();
    if (!json_is_object(args)) {
        json_decref(args);
        return 0;
    }
    json_array_foreach(list, i, tool)
    {
        mcp_tool_check(mcp_tool_find(json_string_value(json_object_get(tool, "name"))),
                       json_object_get(tool, "inputSchema"), args, err, sizeof(err));
    }
    json_decref(args);
    return 0;
}
