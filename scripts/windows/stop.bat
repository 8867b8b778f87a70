@echo off
rem stop.bat - stop the daemon first (its service, if any), then the agent.
rem
rem A pid from runtime\*.pid is stopped only when that process runs this
rem install's executable (checked with PowerShell Get-Process .Path), never a
rem process that merely reuses the pid (W3). Each gets taskkill (a polite
rem close), up to 15 s, then taskkill /F. Never /T: build workers survive.
rem
rem NOT TESTED: cannot run on the Linux build machine; the Windows binaries
rem are not built yet (docs/scripts.md).
setlocal EnableExtensions
cd /d "%~dp0" || exit /b 1
set "WORKDIR=%CD%"
call :service_name
if errorlevel 1 goto :pids
sc.exe query "%SERVICE%" >nul 2>&1
if errorlevel 1 goto :pids
sc.exe stop "%SERVICE%" >nul 2>&1
:pids
call :stop_one daemon devopsDaemon.exe
call :stop_one agent devopsAgent.exe
endlocal
exit /b 0

rem stop_one NAME EXE: stop the pid of runtime\NAME.pid if it runs WORKDIR\EXE.
:stop_one
set "PID="
if not exist "runtime\%~1.pid" goto :not_running
set /p PID=<"runtime\%~1.pid"
if not defined PID goto :not_running
call :is_ours %PID% "%WORKDIR%\%~2"
if errorlevel 1 goto :not_ours
echo %~1: stopping pid %PID%
taskkill /PID %PID% >nul 2>&1
set /a WAITED=0
:stop_wait
call :is_ours %PID% "%WORKDIR%\%~2"
if errorlevel 1 goto :stopped
if %WAITED% geq 15 goto :force
timeout /t 1 /nobreak >nul
set /a WAITED+=1
goto :stop_wait
:force
echo %~1: pid %PID% still runs after 15 s: taskkill /F
taskkill /F /PID %PID% >nul 2>&1
:stopped
echo %~1: stopped
exit /b 0
:not_ours
echo %~1: runtime\%~1.pid names pid %PID%, which is not %~2: left alone
exit /b 0
:not_running
echo %~1: not running
exit /b 0

rem is_ours PID PATH: errorlevel 0 when process PID runs the executable PATH.
:is_ours
set "OURS=%~2"
powershell -NoProfile -ExecutionPolicy Bypass -Command "$p = Get-Process -Id %~1 -ErrorAction SilentlyContinue; if ($p -and $p.Path -eq $env:OURS) { exit 0 } else { exit 1 }" <nul
exit /b %ERRORLEVEL%

rem service_name: SERVICE=devops_agent_<devops.agent.id>; errorlevel 1 if none.
:service_name
set "AGENT_ID="
if not exist .agent.properties goto :no_id
for /f "usebackq tokens=1,* delims== " %%a in (`findstr /b /c:"devops.agent.id" .agent.properties`) do (
	if "%%a"=="devops.agent.id" set "AGENT_ID=%%b"
)
if not defined AGENT_ID goto :no_id
set "SERVICE=devops_agent_%AGENT_ID%"
exit /b 0
:no_id
echo no devops.agent.id in .agent.properties
exit /b 1
