/* Unit tests for the MCP tools' table: every schema is JSON of the shape tools/list
 * promises, and arguments are checked against each tool's inputSchema. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "http/mcp_internal.h"

static const char *const names[] = {"list_services", "service_status",  "start_service",
                                    "stop_service",  "restart_service", "service_logs",
                                    "rediscover",    "gpu_status"};

static void test_list(void **state)
{
    json_t *list = mcp_tools_list(), *tool;
    size_t i;

    assert_int_equal(json_array_size(list), sizeof(names) / sizeof(names[0]));
    json_array_foreach(list, i, tool)
    {
        json_t *in = json_object_get(tool, "inputSchema");
        json_t *out = json_object_get(tool, "outputSchema");
        assert_string_equal(json_string_value(json_object_get(tool, "name")), names[i]);
        assert_true(strlen(json_string_value(json_object_get(tool, "description"))) > 20);
        assert_string_equal(json_string_value(json_object_get(in, "type")), "object");
        assert_true(json_is_object(json_object_get(in, "properties")));
        assert_true(json_is_false(json_object_get(in, "additionalProperties")));
        assert_string_equal(json_string_value(json_object_get(out, "type")), "object");
        assert_true(json_array_size(json_object_get(out, "required")) > 0);
        assert_non_null(mcp_tool_find(names[i]));
    }
    assert_null(mcp_tool_find("nosuch"));
    assert_null(mcp_tool_find(NULL));
    json_decref(list);
}

/* Checks text against tool's schema: 0, or -1 with err containing want. */
static int check(const char *tool, const char *text, const char *want)
{
    json_t *args = json_loads(text, 0, NULL), *list = mcp_tools_list(), *t;
    const json_t *schema = NULL;
    char err[512] = "";
    size_t i;
    int r;

    assert_non_null(args);
    json_array_foreach(list, i, t)
    {
        if (strcmp(json_string_value(json_object_get(t, "name")), tool) == 0)
            schema = json_object_get(t, "inputSchema");
    }
    assert_non_null(schema);
    r = mcp_tool_check(mcp_tool_find(tool), schema, args, err, sizeof(err));
    json_decref(args);
    json_decref(list);
    if (want) {
        assert_int_equal(r, -1);
        assert_non_null(strstr(err, want));
    } else {
        assert_int_equal(r, 0);
    }
    return r;
}

static void test_check_good(void **state)
{
    check("list_services", "{}", NULL);
    check("service_status", "{\"name\":\"a\"}", NULL);
    check("start_service", "{\"name\":\"a\",\"force\":true,\"wait_healthy\":false}", NULL);
    check("service_logs", "{\"name\":\"a\",\"tail\":0}", NULL);
    check("service_logs", "{\"name\":\"a\",\"tail\":10000}", NULL);
}

static void test_check_bad(void **state)
{
    check("service_status", "{}", "arguments.name is missing");
    check("service_status", "{\"name\":1}", "arguments.name must be a string");
    check("service_status", "{\"name\":\"\"}", "arguments.name must be 1 to 63");
    check("service_status",
          "{\"name\":\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"}",
          "arguments.name must be 1 to 63");
    check("start_service", "{\"name\":\"a\",\"force\":1}", "arguments.force must be a boolean");
    check("start_service", "{\"name\":\"a\",\"wait\":true}", "arguments.wait is not an argument");
    check("service_logs", "{\"name\":\"a\",\"tail\":-1}", "arguments.tail must be from 0 to");
    check("service_logs", "{\"name\":\"a\",\"tail\":10001}", "arguments.tail must be from 0 to");
    check("service_logs", "{\"name\":\"a\",\"tail\":1.5}", "arguments.tail must be an integer");
    check("gpu_status", "{\"x\":null}", "arguments.x is not an argument");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_list),
        cmocka_unit_test(test_check_good),
        cmocka_unit_test(test_check_bad),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
